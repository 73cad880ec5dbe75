"""Forward time of the course encoder vs transformers' BertModel (sdpa and eager) on one padded batch of course texts.

Run: python bench/encoder_inference.py [--batch 64] [--repeats 15] [--threads N] [--device cuda] [--quick]
All models get the same weights and the same batch; each is timed, alternating, under torch.no_grad().
"""
from __future__ import annotations

import argparse

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import torch

import common
from course_lib.assets import load_encoder, load_tokenizer
from course_lib.data import movie_reviews_frame
from course_lib.encoder import load_pretrained_encoder

COURSE = "course Encoder"
SDPA = "transformers BertModel (sdpa)"
EAGER = "transformers BertModel (eager)"


def run(device: torch.device, batch_size: int = 64, repeats: int = 15, quick: bool = False) -> dict:
    """Time a forward pass of each model ``repeats`` times, alternating; return times, ratios and agreement."""
    if quick:
        batch_size, repeats = min(batch_size, 4), min(repeats, 2)
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"need --batch >= 1 and --repeats >= 1, got {batch_size} and {repeats}")
    tokenizer = load_tokenizer()
    texts = movie_reviews_frame()["text"].head(batch_size).tolist()
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)
    ours, _ = load_pretrained_encoder()
    models = {COURSE: ours.to(device), SDPA: load_encoder(attn_implementation="sdpa").to(device),
              EAGER: load_encoder(attn_implementation="eager").to(device)}

    runs = {
        COURSE: lambda: models[COURSE](batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]),
        SDPA: lambda: models[SDPA](**batch),
        EAGER: lambda: models[EAGER](**batch),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn(), fn()
        for _ in range(repeats):  # alternate, so that drift in the machine affects all alike
            for name, fn in runs.items():
                times[name].append(common.time_call(fn, device)[0])
        reference = runs[SDPA]().last_hidden_state
        diffs = {name: float((runs[name]().last_hidden_state - reference).abs().max()) for name in (COURSE, EAGER)}

    seconds = {name: common.spread(values) for name, values in times.items()}
    median = {name: s["median"] for name, s in seconds.items()}
    return {
        "batch_shape": list(batch["input_ids"].shape),
        "real_tokens": int(batch["attention_mask"].sum()),
        "repeats": repeats,
        "seconds": seconds,
        "ratios": {
            "course_over_sdpa": median[COURSE] / median[SDPA],
            "course_over_eager": median[COURSE] / median[EAGER],
            "eager_over_sdpa": median[EAGER] / median[SDPA],
        },
        "max_abs_diff_vs_sdpa": diffs,
    }


def report(result: dict) -> str:
    """A short text summary of :func:`run`'s result."""
    lines = [f"batch {tuple(result['batch_shape'])} (texts x tokens), {result['real_tokens']} real tokens; "
             f"{result['repeats']} repeats"]
    for name, s in result["seconds"].items():
        lines.append(f"  {name:32s} median {s['median'] * 1000:8.1f} ms   (min {s['min'] * 1000:.1f} ms, "
                     f"max {s['max'] * 1000:.1f} ms)")
    r, d = result["ratios"], result["max_abs_diff_vs_sdpa"]
    lines.append(f"ratio course / transformers sdpa: {r['course_over_sdpa']:.3f}; course / eager: "
                 f"{r['course_over_eager']:.3f}; eager / sdpa: {r['eager_over_sdpa']:.3f}")
    lines.append(f"max abs diff of last_hidden_state vs sdpa: course {d[COURSE]:.2e}, eager {d[EAGER]:.2e}")
    return "\n".join(lines)


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--batch", type=int, default=64, help="number of movie-review texts in the batch")
    parser.add_argument("--repeats", type=int, default=15, help="timed forward passes per model")
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    print("machine:", common.describe_machine(common.machine_info(device)))
    print(report(run(device, args.batch, args.repeats, args.quick)))


if __name__ == "__main__":
    main()
