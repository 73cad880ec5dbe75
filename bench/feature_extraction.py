"""Encoding every movie review into one mean-pooled vector, three ways a user meets, in texts per second:

* the course's ``course_lib.features.extract_features`` (lesson 06): batches of 64 reviews of similar length,
  each padded to its longest, transformers' ``BertModel`` with SDPA attention, masked mean pooling;
* a plain ``pipeline("feature-extraction")`` loop: one review at a time, the token vectors averaged in NumPy.
  One at a time, its rate does not depend on how many reviews it sees, so it encodes a seeded random sample of
  ``PIPELINE_SAMPLE`` reviews (about 35 s instead of 3.5 min on a 2-core CPU), compared with the course's features
  of the same reviews;
* onnxruntime on the encoder exported to ONNX (with the mean pooling inside the graph), batched like the course.

    python bench/feature_extraction.py [--device cuda] [--threads N] [--quick]

All three start from the same weights (course_lib.assets.encoder_path()) and must give the same features within
``TOLERANCE``; the time counts tokenizing, the forward passes and pooling, not loading or exporting the model
(those are reported apart). A warm-up batch of each way runs first; then each way is timed on each of ``FOLDS``
interleaved thirds of its reviews in turn, which gives a median and a spread from a single pass.
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import numpy as np
import torch

import common
from course_lib.assets import encoder_path, load_encoder, load_tokenizer
from course_lib.data import movie_reviews_frame
from course_lib.features import POOLING_FUNCTIONS, extract_features

COURSE = "course extract_features"
PIPELINE = "pipeline loop"
ONNX = "onnxruntime"
BATCH_SIZE = 64
MAX_LENGTH = 128  # extract_features' default; no review is longer (the longest has 78 tokens)
TOLERANCE = 1e-4  # max abs difference allowed between any two ways' features
QUICK_TEXTS = 48
PIPELINE_SAMPLE = 2000  # reviews the one-at-a-time pipeline loop encodes (a seeded random sample)
PIPELINE_SEED = 0
FOLDS = 3  # each way is timed on 3 interleaved thirds of its reviews: a median and a spread from one pass
QUICK_PIPELINE_SAMPLE = 24  # in smoke mode too, so that the sampled rows are compared with the right ones


class MeanPooledEncoder(torch.nn.Module):
    """The encoder followed by masked mean pooling: token ids (B, T) -> one vector per text (B, D)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state  # (B, T, D)
        return POOLING_FUNCTIONS["mean"](hidden, attention_mask)  # (B, D)


def export_mean_pooled(encoder, tokenizer, path: Path) -> Path:
    """Write the mean-pooled encoder to ``path`` as ONNX, batch and sequence axes dynamic."""
    example = tokenizer(["a short one", "a longer review, padded to the first"], padding=True, return_tensors="pt")
    names = ("input_ids", "attention_mask", "token_type_ids")
    device = next(encoder.parameters()).device
    with warnings.catch_warnings():  # the tracer's notes on Python branches, the exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(MeanPooledEncoder(encoder).eval(), tuple(example[name].to(device) for name in names),
                          str(path), input_names=list(names), output_names=["features"],
                          dynamic_axes={name: {0: "batch", 1: "sequence"} for name in names} | {"features": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return path


def onnx_session(path: Path, device: torch.device):
    """An onnxruntime session with torch's thread count; on the GPU where onnxruntime has a CUDA provider."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = torch.get_num_threads()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


def onnx_features(session, tokenizer, texts: list[str]) -> np.ndarray:
    """(N, D) features from onnxruntime, in batches of similar length, rows in the order of ``texts``."""
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out = np.empty((len(texts), session.get_outputs()[0].shape[1] or 0), dtype=np.float32)
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start:start + BATCH_SIZE]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_LENGTH,
                          return_tensors="np")
        (features,) = session.run(["features"], {name: batch[name].astype(np.int64) for name in
                                                 ("input_ids", "attention_mask", "token_type_ids")})  # (B, D)
        out[rows] = features
    return out


def pipeline_features(extractor, texts: list[str]) -> np.ndarray:
    """(N, D): what a plain loop over ``pipeline("feature-extraction")`` gives, the tokens of each text averaged."""
    return np.stack([np.asarray(extractor(text)[0], dtype=np.float32).mean(axis=0) for text in texts])  # (N, D)


def interleave(parts: list[np.ndarray]) -> np.ndarray:
    """Undo ``rows[fold::len(parts)]``: part ``k`` holds rows k, k + F, k + 2F, ... of the whole, (n, D)."""
    out = np.empty((sum(len(part) for part in parts), parts[0].shape[1]), dtype=parts[0].dtype)
    for fold, part in enumerate(parts):
        out[fold::len(parts)] = part
    return out


def sample_rows(total: int, size: int, seed: int = PIPELINE_SEED) -> np.ndarray:
    """``size`` distinct row numbers out of ``total`` (all of them when ``size >= total``), drawn with ``seed``,
    in increasing order."""
    if size >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=size, replace=False))


def run(device: torch.device, quick: bool = False, texts_limit: int | None = None) -> dict:
    """Encode the movie reviews each way (timed), then compare the features."""
    from transformers import pipeline

    texts = movie_reviews_frame()["text"].tolist()
    limit = QUICK_TEXTS if quick else texts_limit
    if limit is not None:
        if limit < 1:
            raise ValueError(f"need at least one text, got a limit of {limit}")
        texts = texts[:limit]
    tokenizer = load_tokenizer()
    warm = texts[:BATCH_SIZE]

    with common.quiet_transformers():  # no progress bar over the weights
        begin = time.perf_counter()
        model = load_encoder(attn_implementation="sdpa").to(device).eval()
        load_seconds = {COURSE: time.perf_counter() - begin}
        begin = time.perf_counter()
        extractor = pipeline("feature-extraction", model=str(encoder_path()), device=device)
        load_seconds[PIPELINE] = time.perf_counter() - begin
    with tempfile.TemporaryDirectory() as folder:
        begin = time.perf_counter()
        path = export_mean_pooled(model, tokenizer, Path(folder) / "encoder.onnx")
        session = onnx_session(path, device)
        load_seconds[ONNX] = time.perf_counter() - begin  # export + session
        providers = session.get_providers()

        ways = {
            COURSE: lambda items: extract_features(items, model, tokenizer, poolings="mean", batch_size=BATCH_SIZE,
                                                   max_length=MAX_LENGTH, progress=False)["mean"],
            PIPELINE: lambda items: pipeline_features(extractor, items),
            ONNX: lambda items: onnx_features(session, tokenizer, items),
        }
        rows = {name: np.arange(len(texts)) for name in ways}
        rows[PIPELINE] = sample_rows(len(texts), QUICK_PIPELINE_SAMPLE if quick else PIPELINE_SAMPLE)
        for way in ways.values():
            way(warm)  # warm-up
        folds = min(FOLDS, *(len(r) for r in rows.values()))  # a tiny --texts has fewer folds, none empty
        features = {name: [None] * folds for name in ways}
        seconds = {name: [] for name in ways}
        for fold in range(folds):  # fold by fold, every way in turn: drift in the machine's speed hits all alike
            for name, way in ways.items():
                items = [texts[i] for i in rows[name][fold::folds]]
                took, features[name][fold] = common.time_call(lambda: way(items), device)
                seconds[name].append(took)
    features = {name: interleave(parts) for name, parts in features.items()}  # (n, D) in the order of rows[name]
    reference = features[COURSE]  # (N, D), every review
    diffs = {name: float(np.abs(value - reference[rows[name]]).max())
             for name, value in features.items() if name != COURSE}
    lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
    return {
        "texts": len(texts),
        "mean_tokens": float(lengths.mean()),
        "texts_encoded": {name: len(r) for name, r in rows.items()},
        "mean_tokens_encoded": {name: float(lengths[r].mean()) for name, r in rows.items()},
        "pipeline_sample_seed": PIPELINE_SEED,
        "batch_size": BATCH_SIZE,
        "folds": folds,
        "seconds": {name: sum(parts) for name, parts in seconds.items()},
        "texts_per_second": {name: len(rows[name]) / sum(parts) for name, parts in seconds.items()},
        "texts_per_second_by_fold": {name: common.spread([len(rows[name][fold::folds]) / took
                                                          for fold, took in enumerate(parts)])
                                     for name, parts in seconds.items()},
        "load_seconds": load_seconds,
        "onnx_providers": providers,
        "max_abs_diff_vs_course": diffs,
        "tolerance": TOLERANCE,
        "same_features": all(diff <= TOLERANCE for diff in diffs.values()),
        "feature_shape": list(reference.shape),
    }


def compare_folds(result: dict, name: str) -> str:
    """How way ``name`` compares with the course, said only as far as the timings of every fold agree."""
    mine, course = result["texts_per_second_by_fold"][name], result["texts_per_second_by_fold"][COURSE]
    ratio = result["texts_per_second"][name] / result["texts_per_second"][COURSE]
    if mine["min"] > course["max"]:
        return f"faster than the course in every fold ({ratio:.2f}x overall)"
    if mine["max"] < course["min"]:
        return f"slower than the course in every fold ({ratio:.2f}x overall)"
    return f"as fast as the course within the spread of the folds ({ratio:.2f}x overall; the fold ranges overlap)"


def report(result: dict) -> str:
    """A short text summary of :func:`run`'s result."""
    lines = [f"{result['texts']} reviews (mean {result['mean_tokens']:.1f} tokens) -> features "
             f"{tuple(result['feature_shape'])}"]
    course = result["texts_per_second"][COURSE]
    for name, rate in result["texts_per_second"].items():
        diff = result["max_abs_diff_vs_course"].get(name)
        by_fold = result["texts_per_second_by_fold"][name]
        lines.append(f"  {name:24s} {rate:8.1f} texts/s (folds {by_fold['min']:.1f}-{by_fold['max']:.1f}; "
                     f"{result['texts_encoded'][name]} texts in {result['seconds'][name]:.1f} s; x{rate / course:.2f} "
                     f"the course's){'' if diff is None else f'; max abs diff {diff:.1e}'}")
    lines += [f"  {name}: {compare_folds(result, name)}" for name in result["texts_per_second"] if name != COURSE]
    lines.append(f"  same features within {result['tolerance']:g}: {result['same_features']}")
    return "\n".join(lines)


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--texts", type=int, default=None, help="encode only the first N reviews")
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    print("machine:", common.describe_machine(common.machine_info(device)))
    print(report(run(device, args.quick, args.texts)))


if __name__ == "__main__":
    main()
