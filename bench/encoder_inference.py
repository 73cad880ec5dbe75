"""Forward time of the course encoder vs transformers' BertModel (sdpa) on one padded batch of course texts.

Run: python bench/encoder_inference.py [--batch 64] [--repeats 15] [--threads N]
Both models get the same weights and the same batch; each is timed, alternating, under torch.no_grad().
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import course_lib  # noqa: F401  (offline mode before transformers is imported)
from course_lib.assets import load_encoder, load_tokenizer
from course_lib.data import movie_reviews_frame
from course_lib.encoder import load_pretrained_encoder


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="number of movie-review texts in the batch")
    parser.add_argument("--repeats", type=int, default=15, help="timed forward passes per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tokenizer = load_tokenizer()
    texts = movie_reviews_frame()["text"].head(args.batch).tolist()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    ours, _ = load_pretrained_encoder()
    theirs = load_encoder(attn_implementation="sdpa")

    runs = {
        "course Encoder": lambda: ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]),
        "transformers BertModel (sdpa)": lambda: theirs(**batch),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn(), fn()
        for _ in range(args.repeats):  # alternate, so that drift in the machine affects both alike
            for name, fn in runs.items():
                times[name].append(time_once(fn))
        diff = (runs["course Encoder"]().last_hidden_state - runs["transformers BertModel (sdpa)"]().last_hidden_state)

    load = ", load average {:.1f}".format(os.getloadavg()[0]) if hasattr(os, "getloadavg") else ""
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs{load}; python {platform.python_version()}, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    import transformers

    print(f"transformers {transformers.__version__}; batch {tuple(batch['input_ids'].shape)} (texts x tokens), "
          f"{int(batch['attention_mask'].sum())} real tokens; {args.repeats} repeats")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"  {name:32s} median {median * 1000:8.1f} ms   (min {min(times[name]) * 1000:.1f} ms)")
    ratio = medians["course Encoder"] / medians["transformers BertModel (sdpa)"]
    print(f"ratio course / transformers: {ratio:.3f}   (max abs diff of last_hidden_state {diff.abs().max():.2e})")


if __name__ == "__main__":
    main()
