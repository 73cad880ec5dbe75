"""Run every benchmark and write the results to ``bench/results/`` (``results.json`` and ``results.md``).

    python bench/run_all.py                 # CPU, the default budget (about 10 minutes on a quiet 2-core machine)
    python bench/run_all.py --device cuda   # a GPU: the whole training split, mixed precision for the course
    python bench/run_all.py --quick --out /tmp/bench   # smoke mode: tiny sizes, a few seconds of work

1. fine-tuning throughput: the course recipe against a naive one (bench/finetune.py);
2. inference: the course encoder against transformers' BertModel, sdpa and eager (bench/encoder_inference.py);
3. generation: the course decoder with and without its KV cache, and transformers' generate (bench/generation.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import common
import encoder_inference
import finetune
import generation

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("finetune", "inference", "generation")
CPU_SPEEDUP_GOAL, GPU_SPEEDUP_GOAL, INFERENCE_GOAL = 5.0, 10.0, 1.3


def goals(results: dict, device_type: str) -> dict:
    """Whether each stated goal was met on this run (None where its benchmark did not run)."""
    out = {}
    if "finetune" in results:
        s = results["finetune"]["summary"]
        target = GPU_SPEEDUP_GOAL if device_type == "cuda" else CPU_SPEEDUP_GOAL
        noise = s["naive"]["accuracy"]["stdev"] + s["course"]["accuracy"]["stdev"]
        out["finetune_speedup"] = {"goal": target, "value": s["speedup"]["samples_per_second_ratio"],
                                   "met": s["speedup"]["samples_per_second_ratio"] >= target}
        out["finetune_accuracy_no_lower"] = {  # "within noise": the two seed spreads added
            "goal": f"course mean >= naive mean - {noise:.4f} (naive stdev + course stdev)",
            "value": s["speedup"]["accuracy_difference"], "met": s["speedup"]["accuracy_difference"] >= -noise}
    if "inference" in results:
        ratio = results["inference"]["ratios"]["course_over_sdpa"]
        out["inference_within"] = {"goal": INFERENCE_GOAL, "value": ratio, "met": ratio <= INFERENCE_GOAL}
    return out


def _row(*cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown(results: dict) -> str:
    """The results as a Markdown page: machine, then one table per benchmark."""
    meta = results["meta"]
    lines = ["# Benchmark results", "",
             f"- machine: {common.describe_machine(results['machine'])}",
             f"- command: `{meta['command']}`",
             f"- total time: {meta['total_seconds'] / 60:.1f} min; load average (1, 5, 15 min) at the end: "
             f"{meta['load_average_end']}"]
    if meta["quick"]:
        lines.append("- **smoke mode (`--quick`): tiny sizes, the numbers mean nothing**")
    lines.append("")

    if "finetune" in results:
        ft = results["finetune"]
        b, s = ft["budget"], ft["summary"]
        lines += ["## Fine-tuning throughput: course recipe vs naive recipe", "",
                  f"Same model (course encoder, MiniLM weights, two-class head), same {b['train_examples']} movie-review "
                  f"training examples, {b['epochs']} epoch(s), AdamW with lr {b['learning_rate']:g} x the recipe's lr "
                  f"scale (its batch size / 8, the linear scaling rule), linear schedule "
                  f"with {b['warmup_share']:.0%} warm-up, seeds {b['seeds']}; validation accuracy on "
                  f"{b['validation_examples']} examples. Spread: min-max over the seeds.", "",
                  _row("recipe", "batch", "lr", "padding", "length-grouped", "precision", "attention", "samples/s",
                       "training s", "padding share", "validation accuracy", "final loss"),
                  _row(*["---"] * 12)]
        for recipe in ft["recipes"]:
            r = s[recipe["name"]]
            sps, acc = r["samples_per_second"], r["accuracy"]
            padding = f"to {recipe['max_length']} up front" if recipe["max_length"] else "per batch (collator)"
            lines.append(_row(
                recipe["name"], recipe["batch_size"], f"{b['learning_rate'] * recipe['lr_scale']:g}", padding, "yes" if recipe["group_by_length"] else "no",
                recipe["precision"], recipe["attention"],
                f"{sps['median']:.1f} ({sps['min']:.1f}-{sps['max']:.1f})",
                f"{r['train_seconds']['median']:.1f}", f"{r['padding_share']['median']:.0%}",
                f"{acc['mean']:.4f} ± {acc['stdev']:.4f} ({acc['min']:.4f}-{acc['max']:.4f})",
                f"{r['final_loss']['median']:.3f}"))
        sp = s["speedup"]
        lines += ["", f"**Speed-up: {sp['samples_per_second_ratio']:.1f}x** training samples/s "
                  f"(per seed {sp['per_seed']['min']:.1f}x-{sp['per_seed']['max']:.1f}x); wall time "
                  f"(tokenizing + training) {sp['wall_time_ratio']:.1f}x shorter; accuracy difference "
                  f"(course - naive) {sp['accuracy_difference']:+.4f}.", ""]

    if "inference" in results:
        inf = results["inference"]
        sdpa = inf["seconds"][encoder_inference.SDPA]["median"]
        lines += ["## Inference: course encoder vs transformers BertModel", "",
                  f"One batch of {inf['batch_shape'][0]} movie reviews padded to {inf['batch_shape'][1]} tokens "
                  f"({inf['real_tokens']} real tokens), forward pass under `torch.no_grad()`, "
                  f"{inf['repeats']} repeats, alternating.", "",
                  _row("model", "median ms", "min ms", "max ms", "time / transformers sdpa",
                       "max abs diff vs sdpa"), _row(*["---"] * 6)]
        for name, t in inf["seconds"].items():
            diff = inf["max_abs_diff_vs_sdpa"].get(name)
            lines.append(_row(name, f"{t['median'] * 1000:.1f}", f"{t['min'] * 1000:.1f}", f"{t['max'] * 1000:.1f}",
                              f"{t['median'] / sdpa:.3f}", "-" if diff is None else f"{diff:.1e}"))
        lines.append("")

    if "generation" in results:
        gen = results["generation"]
        lines += ["## Generation: SmolLM2-135M, greedy", "",
                  f"Prompt {gen['prompt']!r} ({gen['prompt_tokens']} tokens), batch 1, median of "
                  f"{gen['repeats']} runs after a warm-up. All runs produced the same tokens: {gen['same_tokens']}.",
                  "", _row("run", "tokens/s (median)", "min", "max", "new tokens"), _row(*["---"] * 5)]
        for name, t in gen["tokens_per_second"].items():
            lines.append(_row(name, f"{t['median']:.1f}", f"{t['min']:.1f}", f"{t['max']:.1f}",
                              gen["new_tokens"][name]))
        r = gen["ratios"]
        lines += ["", f"KV cache vs no cache: {r['cache_over_no_cache']:.2f}x; course (cache) / transformers "
                  f"(sdpa): {r['course_cache_over_transformers_sdpa']:.2f}.", ""]

    if results["goals"]:
        lines += ["## Goals", "", _row("goal", "target", "this run", "met"), _row(*["---"] * 4)]
        for name, g in results["goals"].items():
            value = f"{g['value']:+.4f}" if name == "finetune_accuracy_no_lower" else f"{g['value']:.2f}"
            lines.append(_row(name, g["goal"], value, "yes" if g["met"] else "**no**"))
        lines.append("")
    return "\n".join(lines)


def write(results: dict, out: Path) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` in ``out``, each written whole (via a temporary file)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "results.json", out / "results.md"
    for path, text in zip(paths, (json.dumps(results, indent=2) + "\n", markdown(results) + "\n")):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"folder for the result files (default {RESULTS})")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run only these")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="fine-tuning examples per run (default: 160 on the CPU, the whole split on a GPU)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--naive-max-length", type=int, default=None,
                        help="tokens the naive recipe pads to (default: the tokenizer's maximum, 512)")
    args = parser.parse_args(argv)
    device = common.setup(args.device, args.threads)
    machine = common.machine_info(device)
    print("machine:", common.describe_machine(machine), flush=True)
    start = time.perf_counter()
    results: dict = {"machine": machine}

    def section(title: str, fn, report):
        print(f"\n== {title}", flush=True)
        begin = time.perf_counter()
        result = fn()
        print(report(result), f"\n({time.perf_counter() - begin:.0f} s)", flush=True)
        return result

    if "finetune" in args.only:
        results["finetune"] = section(
            "fine-tuning throughput: course recipe vs naive recipe",
            lambda: finetune.run(device, args.quick, args.train_examples, 1, tuple(args.seeds),
                                 args.naive_max_length, log=lambda text: print(text, flush=True)),
            finetune.report)
    if "inference" in args.only:
        results["inference"] = section("inference: course encoder vs transformers BertModel",
                                       lambda: encoder_inference.run(device, quick=args.quick),
                                       encoder_inference.report)
    if "generation" in args.only:
        results["generation"] = section("generation: SmolLM2-135M, greedy",
                                        lambda: generation.run(device, quick=args.quick), generation.report)
    results["goals"] = {} if args.quick else goals(results, device.type)  # smoke sizes judge nothing
    results["meta"] = {"command": " ".join(["python", "bench/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
                       "quick": args.quick, "total_seconds": time.perf_counter() - start,
                       "load_average_end": common.load_average()}
    json_path, md_path = write(results, args.out)
    print(f"\n{markdown(results)}\nwrote {json_path} and {md_path}")
    return results


if __name__ == "__main__":
    main()
