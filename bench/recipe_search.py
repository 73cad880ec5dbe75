"""Which fine-tuning recipe reaches the target in the fewest float32 seconds: a small search over the choices
that change how many examples a run needs (learning rate, warm-up, batch size, layer-wise decay) or what each
example costs (frozen embeddings), each candidate run to the target on several seeds.

    python bench/recipe_search.py [--seeds 0 1 2] [--only NAME ...] [--quick]

Every candidate trains in float32 (what a CPU without native bf16 computes) with the loop of ``finetune.py``, is
scored on the same fixed **stopping set** (the first 500 validation reviews) and stops at the first evaluation
that reaches the target; the other 775 validation reviews (held out) only report the stopped model's accuracy.
The choice is made on the stopping set and the seeds here; the benchmark then re-runs the chosen recipe with
the defaults, side by side. A run writes ``bench/results/recipe_search_latest.{json,md}``; the searches so far
are summarised in ``bench/results/recipe_search.md``.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import common
import finetune

RESULTS = Path(__file__).resolve().parent / "results"


def candidates() -> list[finetune.Recipe]:
    """The starting point (the course's previous recipe, in float32) and one change at a time from the best."""
    base = replace(finetune.course_recipe(), name="previous course", mixed_precision=False,
                   learning_rate=1e-4, warmup_share=0.1, batch_size=32)
    short = replace(base, name="lr 2e-4, warm-up 2%", learning_rate=2e-4, warmup_share=0.02)
    mean = replace(short, name="mean pooling, lr 2e-4, warm-up 2%", pooling="mean")
    return [
        base,
        replace(base, name="warm-up 2%", warmup_share=0.02),
        short,
        replace(short, name="lr 3e-4, warm-up 2%", learning_rate=3e-4),
        replace(short, name="lr 2e-4, warm-up 2%, batch 16", batch_size=16),
        replace(short, name="lr 2e-4, warm-up 2%, frozen embeddings", freeze_embeddings=True),
        replace(short, name="lr 3e-4, warm-up 2%, layer decay 0.8", learning_rate=3e-4, layer_decay=0.8),
        replace(base, name="mean pooling", pooling="mean"),
        mean,
        replace(mean, name="mean pooling, lr 2e-4, warm-up 2%, batch 16", batch_size=16),
        replace(mean, name="mean pooling, lr 2e-4, warm-up 2%, frozen embeddings", freeze_embeddings=True),
        replace(base, name="mean pooling, decay over 1/4 epoch", pooling="mean", schedule_epochs=0.25),
        replace(base, name="mean pooling, lr 2e-4, decay over 1/4 epoch", pooling="mean", schedule_epochs=0.25,
                learning_rate=2e-4),
    ]


def summarize(runs: list[dict]) -> dict:
    """Median seconds and examples to the target, held-out accuracy, per candidate (None where a seed missed)."""
    out = {}
    for name in dict.fromkeys(run["recipe"] for run in runs):
        mine = [run for run in runs if run["recipe"] == name]
        reached = all(run["reached"] for run in mine)
        out[name] = {
            "seeds": len(mine), "all_reached": reached,
            "median_seconds": statistics.median(r["time_to_target"] for r in mine) if reached else None,
            "median_examples": statistics.median(r["examples_to_target"] for r in mine) if reached else None,
            "examples": [r["examples_to_target"] for r in mine],
            "seconds": [r["time_to_target"] for r in mine],
            "ms_per_example": statistics.median(r["train_seconds"] / r["examples"] * 1000 for r in mine),
            "held_out": statistics.mean(r["final_accuracy"] for r in mine),
        }
    return out


def markdown(result: dict) -> str:
    lines = ["# Fine-tuning recipe search (float32)", "",
             f"- machine: {common.describe_machine(result['machine'])}",
             f"- seeds {result['seeds']}, target {result['target']} on the stopping set (500 validation reviews), "
             "held-out accuracy on the other 775; evaluation every 512 examples, not counted", "",
             "| candidate | examples to target (per seed) | median examples | s to target (per seed) | median s | "
             "ms / example | held-out accuracy |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in result["summary"].items():
        seconds = ", ".join("-" if x is None else f"{x:.1f}" for x in s["seconds"])
        examples = ", ".join("-" if x is None else f"{x:,}" for x in s["examples"])
        median_s = f"{s['median_seconds']:.1f}" if s["all_reached"] else "not every seed reached"
        median_e = f"{s['median_examples']:,.0f}" if s["all_reached"] else "-"
        lines.append(f"| {name} | {examples} | {median_e} | {seconds} | {median_s} | {s['ms_per_example']:.1f} | "
                     f"{s['held_out']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", default=None, help="candidate names to run (default: all)")
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    machine = common.machine_info(device)
    print("machine:", common.describe_machine(machine))
    data = finetune.load_data(args.quick)
    eval_every = 32 if args.quick else finetune.EVAL_EVERY_EXAMPLES
    max_examples = 64 if args.quick else data["train_rows"]
    chosen = [c for c in candidates() if args.only is None or c.name in args.only]
    finetune.warm_up(chosen[:1], data, device)
    runs = []
    for seed in args.seeds:  # seeds outermost: drift in a shared machine hits every candidate alike
        for recipe in chosen:
            run = finetune.run_to_target(recipe, seed, data, device, finetune.TARGET_ACCURACY, eval_every,
                                         max_examples)
            runs.append({k: v for k, v in run.items() if k != "curve"} | {"curve": run["curve"]})
    result = {"machine": machine, "seeds": args.seeds, "target": finetune.TARGET_ACCURACY,
              "candidates": [asdict(c) for c in chosen], "runs": runs, "summary": summarize(runs)}
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "recipe_search_latest.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        (RESULTS / "recipe_search_latest.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
