"""Run every benchmark and write the results to ``bench/results/``: ``results.{json,md}`` on the CPU,
``results_cuda.{json,md}`` with ``--device cuda``.

    python bench/run_all.py                 # CPU: about 17 minutes on a quiet 2-core machine
    python bench/run_all.py --device cuda   # a GPU: every recipe, the naive one included, runs to the target
    python bench/run_all.py --quick         # smoke mode: tiny sizes, about a minute; writes to a temporary folder

1. fine-tuning: time to 0.80 validation accuracy for three recipes x three seeds, and the course recipe's model
   FLOP utilisation in float32 and bf16 (bench/finetune.py, bench/flops.py);
2. inference: encoding every movie review into mean-pooled features, three ways (bench/feature_extraction.py);
3. generation: the course decoder with and without its KV cache, and transformers' generate (bench/generation.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import common
import feature_extraction
import finetune
import generation

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("finetune", "features", "generation")
QUIET_SHARE = 0.05  # other processes may take up to this share of the CPU time for a run to count as quiet


def _row(*cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _borrowed(run: dict, key: str) -> str:
    """An accuracy of ``run``, marked where it is another recipe's (an estimated run that was not trained)."""
    source = run.get("accuracies_from")
    return f"{run[key]:.3f}" + (f" ({source}'s)" if source else "")


def _spread(s: dict | None, fmt=_seconds) -> str:
    return "-" if s is None else f"{fmt(s['median'])} ({fmt(s['min'])}-{fmt(s['max'])})"


def result_paths(out: Path, device_type: str) -> tuple[Path, Path]:
    stem = "results" if device_type == "cpu" else f"results_{device_type}"
    return out / f"{stem}.json", out / f"{stem}.md"


def markdown_machine(results: dict) -> list[str]:
    meta, machine = results["meta"], results["machine"]
    flags = machine.get("cpu_flags", {})
    present = ", ".join(flag for flag, on in flags.items() if on) or "none reported"
    absent = ", ".join(flag for flag, on in flags.items() if not on) or "none"
    lines = [f"# Benchmark results ({machine['device']})", "",
             f"- machine: {machine['cpu']}, {machine['logical_cores']} logical cores, {machine['torch_threads']} torch "
             f"threads; matmul flags present: {present}; absent: {absent}; torch CPU capability "
             f"{machine['torch_cpu_capability']}" + (f"; GPU {machine['gpu']} (CUDA {machine.get('cuda')})"
                                                     if machine["gpu"] else ""),
             f"- versions: python {machine['python']}, torch {machine['torch']}, transformers "
             f"{machine['transformers']}, onnxruntime {machine['onnxruntime']}, onnx {machine['onnx']}",
             f"- command: `{meta['command']}`, started {machine['date']}; total time {meta['total_seconds'] / 60:.1f} min",
             f"- load average (1, 5, 15 min) before: {meta['load_average_start']}, after each section: "
             f"{meta['load_averages'][1:]}. {meta['load_note']}"]
    if meta["quick"]:
        lines.append("- **smoke mode (`--quick`): tiny sizes, the numbers mean nothing**")
    return lines + [""]


def markdown_finetune(ft: dict) -> list[str]:
    setup, s = ft["setup"], ft["summary"]
    target = setup["target"]
    lines = [f"## Fine-tuning: time to {target:.2f} validation accuracy", "",
             f"Wall time from the pretrained encoder (all-MiniLM-L6-v2 with a fresh two-class head: on the mean of "
             f"the real tokens' vectors for the course recipe, as lesson 07 trains it; on [CLS] through BERT's pooler, "
             f"`AutoModelForSequenceClassification`, for the others) to an accuracy of at least {target:.2f} on a "
             f"fixed subset of "
             f"{setup['validation_rows']} validation reviews, scored every {setup['eval_every_examples']} training "
             f"examples. The clock runs from loading the tokenizer and weights and tokenizing the "
             f"{setup['train_rows']:,} training reviews to the first evaluation at the target; **evaluation time is "
             f"not counted** (its column shows it). A run stops unreached after {setup['max_examples']:,} examples. "
             f"Held-out accuracy: the stopped model on the other {setup['check_rows']:,} validation reviews, which "
             "played no part in deciding when to stop. "
             f"Seeds {setup['seeds']}; one training loop for all recipes does what `Trainer` does per step.", "",
             _row("recipe", "head", "batch", "lr", "weight decay", "warm-up", "linear decay over", "padding",
                  "length-grouped", "precision", "attention", "from"),
             _row(*["---"] * 12)]
    for r in ft["recipes"]:
        padding = f"to {r['pad_to']} up front" if r["pad_to"] else "per batch (collator)"
        head = "mean of the tokens" if r.get("pooling") == "mean" else "[CLS] + pooler"
        lines.append(_row(r["name"], head, r["batch_size"], f"{r['learning_rate']:g}", f"{r['weight_decay']:g}",
                          f"{r['warmup_share']:.0%}", f"{r['schedule_epochs']:g} epoch(s)", padding,
                          "yes" if r["group_by_length"] else "no", r["precision"], r["attention"], r["source"]))
    lines += ["", _row("recipe", "seed", f"time to {target:.2f} (s)", "steps", "examples", "ms / step",
                       "padding share", "MFU", f"accuracy at stop ({setup['validation_rows']})",
                       f"held-out accuracy ({setup['check_rows']:,})", "eval s (not counted)", "how measured"),
              _row(*["---"] * 12)]
    for run in ft["runs"]:
        estimated = run["measured"] != "run to the target"
        if run["reached"]:
            time_text = _seconds(run["time_to_target"]) + (" (estimated)" if estimated else "")
        else:
            time_text = "not reached" + (" (estimated)" if estimated else f" in {run['examples']:,} examples")
        lines.append(_row(run["recipe"], run["seed"], time_text, run["steps_to_target"] or "-",
                          f"{run['examples_to_target']:,}" if run["examples_to_target"] else "-",
                          f"{run['seconds_per_step'] * 1000:.0f}", f"{1 - run['real_tokens'] / run['tokens']:.0%}",
                          f"{run['mfu']:.1%}" if "mfu" in run else "-", _borrowed(run, "accuracy_at_stop"),
                          _borrowed(run, "final_accuracy"), _seconds(run["eval_seconds"]), run["measured"]))
    lines += ["", _row("recipe", f"median time to {target:.2f}, s (min-max)", "median steps",
                       "held-out accuracy, mean", "course's speed-up: their median time / course's median time "
                       "(per-seed ratios, min-max)"),
              _row(*["---"] * 5)]
    for r in ft["recipes"]:
        mine, speed = s[r["name"]], s["speedup_of_course_over"].get(r["name"])
        if r["name"] == s.get("course_mixed"):  # the reduced-precision column: its own ratio to the defaults
            mixed = s["speedup_of_course_mixed_over"]["hf-default"]
            speed_text = (f"{r['precision']} column: hf-default's median / this one's = **"
                          f"{mixed['median_time_ratio']:.1f}x**" if mixed["valid"] else
                          "no claim: a run did not reach the target")
        elif speed is None:
            speed_text = "1 (reference)"
        elif speed["valid"]:
            speed_text = (f"**{speed['median_time_ratio']:.1f}x** ({speed['per_seed']['min']:.1f}x-"
                          f"{speed['per_seed']['max']:.1f}x)")
        else:
            speed_text = "no claim: a run did not reach the target"
        lines.append(_row(r["name"], _spread(mine["time_to_target"]),
                          _spread(mine["steps_to_target"], lambda v: f"{v:.0f}"),
                          f"{mine['final_accuracy']['mean']:.3f}" + (f" ({r['same_arithmetic_as']}'s runs)" if
                                                                      r["same_arithmetic_as"] and setup["extrapolated"]
                                                                      else ""), speed_text))
    naive = next((r for r in ft["recipes"] if r["same_arithmetic_as"]), None)
    if naive and setup["extrapolated"]:
        lines += ["", f"The {naive['name']} recipe is **estimated, not run to the target**: its steps to the target "
                  f"are those of the {naive['same_arithmetic_as']} run with the same seed (same optimiser, batches, "
                  f"order and head; padding to {naive['pad_to']} and eager attention change no logit beyond float "
                  f"tolerance, as `tests/test_bench_smoke.py` checks), times the median of "
                  f"{setup['timed_steps']} of its real steps at {naive['pad_to']} tokens, plus its measured setup. "
                  "Dropout would draw other masks over the larger padded tensors: an equally likely draw of the same "
                  f"training, not the same one. Its accuracies, and whether it reaches the target, are therefore "
                  f"those of the {naive['same_arithmetic_as']} runs (marked so): it was not trained to the target "
                  "here."]
    lines += ["", "A speed-up is claimed only where both recipes reached the target on every seed."]
    if "course_mixed" not in s:
        lines += ["", "**Precision columns.** Every recipe above ran in float32, what every CPU computes. The bf16 "
                  "column (the course recipe with bf16 autocast) runs only where the hardware computes bf16 "
                  "natively (AVX512-BF16 or AMX on a CPU, or a GPU): this one does not, and emulated bf16 is slower "
                  "than float32 here."]
    return lines + [""]


def markdown_mfu(ft: dict) -> list[str]:
    lines = ["## Distance to the machine's limit: model FLOP utilisation of the course recipe", "",
             "MFU = model FLOP/s achieved in training / peak matmul FLOP/s measured in this run (best of "
             "`torch.matmul` on square matrices). Model FLOPs per training step = 3 x forward, forward per sequence "
             "of T tokens = L x (8 T d^2 + 4 T d f + 4 T^2 d) + 2 d^2 + 2 d C (projections, feed-forward, attention "
             "scores and weighted sum; pooler and classifier), i.e. 6 x (12 L d^2 layer weights) x tokens + 12 L T d "
             "x tokens + the pooler and classifier; L = 6, d = 384, f = 1536, C = 2. Softmax, LayerNorm, GELU and "
             "the optimiser are not counted. "
             "\"As computed\" counts padded tokens (the work the hardware did); \"real tokens\" leaves padding out. "
             f"The same {next(iter(ft['mfu'].values()))['steps']} course-recipe batches (seed 0) in each precision.",
             "", _row("precision", "peak matmul GFLOP/s (n)", "achieved model GFLOP/s", "MFU (as computed)",
                      "MFU (real tokens)", "tokens/s"), _row(*["---"] * 6)]
    peaks = ft["peaks"]["peaks"]
    for name, m in ft["mfu"].items():
        p = peaks[name]
        lines.append(_row(name, f"{p['flops_per_second'] / 1e9:.1f} ({p['size']})", f"{m['flops_per_second'] / 1e9:.1f}",
                          f"**{m['mfu']:.1%}**", f"{m['useful_mfu']:.1%}", f"{m['tokens_per_second']:,.0f}"))
    if "bfloat16" in ft["mfu"] and "float32" in ft["mfu"]:
        half, full = ft["mfu"]["bfloat16"], ft["mfu"]["float32"]
        ratio = peaks["bfloat16"]["flops_per_second"] / peaks["float32"]["flops_per_second"]
        lines += ["", f"bfloat16 trained {half['tokens_per_second'] / full['tokens_per_second']:.2f}x float32's "
                  f"tokens per second, against a matmul peak {ratio:.1f}x as high: MFU {half['mfu']:.1%} vs "
                  f"{full['mfu']:.1%}. The course recipe trains in bfloat16 where the hardware computes it natively; "
                  "the float32 row is the same batches in float32, for comparison."]
    course = [run["mfu"] for run in ft["runs"] if run["recipe"] == "course" and "mfu" in run]
    if course:
        precision = next(run["precision"] for run in ft["runs"] if run["recipe"] == "course")
        lines += ["", f"The course recipe's time-to-target runs ({precision}, training steps only): MFU "
                  f"{common.spread(course)['median']:.1%} (median of {len(course)})."]
    return lines + [""]


def markdown_features(fx: dict) -> list[str]:
    course = fx["texts_per_second"][feature_extraction.COURSE]
    lines = [f"## Inference: {fx['texts']:,} movie reviews to mean-pooled features", "",
             f"Every review (mean {fx['mean_tokens']:.1f} tokens) to one {fx['feature_shape'][1]}-number vector. "
             f"Course: `course_lib.features.extract_features` (batches of {fx['batch_size']} sorted by length, "
             "transformers `BertModel`, SDPA). Pipeline: a plain loop over `pipeline(\"feature-extraction\")`, one "
             f"review at a time, tokens averaged in NumPy; one at a time, its rate does not depend on how many it "
             f"sees, so it encodes a random sample of {fx['texts_encoded'][feature_extraction.PIPELINE]:,} reviews "
             f"(seed {fx['pipeline_sample_seed']}, mean "
             f"{fx['mean_tokens_encoded'][feature_extraction.PIPELINE]:.1f} tokens), compared with the course's "
             "features of the same reviews. onnxruntime: the encoder and mean pooling exported to ONNX "
             f"(opset 17), batched like the course, providers {fx['onnx_providers']}. Time counts tokenizing, forward "
             f"and pooling; loading (and exporting) is apart. Same features within {fx['tolerance']:g}: "
             f"**{fx['same_features']}**.", "",
             _row("way", "texts/s", f"texts/s in each of {fx['folds']} folds (min-max)", "reviews encoded", "seconds",
                  "vs course", "max abs diff vs course", "load / export s"),
             _row(*["---"] * 8)]
    for name, rate in fx["texts_per_second"].items():
        diff, by_fold = fx["max_abs_diff_vs_course"].get(name), fx["texts_per_second_by_fold"][name]
        lines.append(_row(name, f"{rate:,.0f}", f"{by_fold['min']:,.0f}-{by_fold['max']:,.0f}",
                          f"{fx['texts_encoded'][name]:,}", _seconds(fx["seconds"][name]),
                          f"{rate / course:.2f}x",
                          "-" if diff is None else f"{diff:.1e}", _seconds(fx["load_seconds"][name])))
    lines.append("")
    for name in fx["texts_per_second"]:
        if name != feature_extraction.COURSE:
            lines.append(f"- {name}: {feature_extraction.compare_folds(fx, name)}")
    return lines + [""]


def markdown_generation(gen: dict) -> list[str]:
    lines = ["## Generation: SmolLM2-135M, greedy", "",
             f"Prompt {gen['prompt']!r} ({gen['prompt_tokens']} tokens), batch 1, median of {gen['repeats']} runs "
             f"after a warm-up. All {gen['runs_compared']} runs (warm-ups included) produced the same tokens: "
             f"**{gen['same_tokens']}**.", "",
             _row("run", "tokens/s (median)", "min", "max", "new tokens"), _row(*["---"] * 5)]
    for name, t in gen["tokens_per_second"].items():
        lines.append(_row(name, f"{t['median']:.1f}", f"{t['min']:.1f}", f"{t['max']:.1f}", gen["new_tokens"][name]))
    r = gen["ratios"]
    lines += ["", f"KV cache vs no cache: **{r['cache_over_no_cache']:.2f}x**; course (cache) / transformers "
              f"(sdpa): {r['course_cache_over_transformers_sdpa']:.2f}.", ""]
    return lines


def readme_table(results: dict) -> str:
    """The few lines README.md quotes from a run (printed at the end; README is edited by hand from them)."""
    rows = [_row("benchmark", "latest run"), _row("---", "---")]
    if "finetune" in results:
        ft = results["finetune"]
        s, target = ft["summary"], ft["setup"]["target"]
        for r in ft["recipes"]:
            mine, speed = s[r["name"]], s["speedup_of_course_over"].get(r["name"])
            if mine["all_reached"]:
                text = (f"{_spread(mine['time_to_target'])} s, {mine['steps_to_target']['median']:.0f} steps "
                        f"(median, min-max of {len(ft['setup']['seeds'])} seeds)")
            else:
                text = "did not reach the target on every seed"
            if speed and speed["valid"]:
                text += f"; course (float32) **{speed['median_time_ratio']:.1f}x** faster"
            if r["name"] == s.get("course_mixed") and s["speedup_of_course_mixed_over"]["hf-default"]["valid"]:
                text += (f"; **{s['speedup_of_course_mixed_over']['hf-default']['median_time_ratio']:.1f}x** "
                         "faster than hf-default")
            estimated = " (estimated)" if r["same_arithmetic_as"] and ft["setup"]["extrapolated"] else ""
            rows.append(_row(f"time to {target:.2f} accuracy, {r['name']}{estimated}", text))
        peaks = ft["peaks"]["peaks"]
        rows.append(_row("MFU of the course recipe", "; ".join(
            f"{name} {m['mfu']:.1%} of a {peaks[name]['flops_per_second'] / 1e9:.0f} GFLOP/s matmul peak"
            for name, m in ft["mfu"].items())))
    if "features" in results:
        fx = results["features"]
        rows.append(_row(f"{fx['texts']:,} reviews to features, texts/s", ", ".join(
            f"{name} {rate:,.0f}" for name, rate in fx["texts_per_second"].items()) +
            f" (the pipeline loop on a sample of {fx['texts_encoded'][feature_extraction.PIPELINE]:,}); same "
            f"features: {fx['same_features']}"))
    if "generation" in results:
        gen = results["generation"]
        rates = {name: t["median"] for name, t in gen["tokens_per_second"].items()}
        rows.append(_row("SmolLM2-135M greedy, tokens/s", ", ".join(f"{name} {rate:.1f}" for name, rate in
                                                                   rates.items()) +
                         f"; KV cache {gen['ratios']['cache_over_no_cache']:.1f}x"))
    return "\n".join(rows)


def markdown(results: dict) -> str:
    """The results as a Markdown page: the machine, then one section per benchmark."""
    lines = markdown_machine(results)
    if "finetune" in results:
        lines += markdown_finetune(results["finetune"]) + markdown_mfu(results["finetune"])
    if "features" in results:
        lines += markdown_features(results["features"])
    if "generation" in results:
        lines += markdown_generation(results["generation"])
    return "\n".join(lines)


def write(results: dict, out: Path, device_type: str) -> tuple[Path, Path]:
    """The JSON and Markdown files in ``out``, each written whole (via a temporary file)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = result_paths(out, device_type)
    for path, text in zip(paths, (json.dumps(results, indent=2) + "\n", markdown(results) + "\n")):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    return paths


def load_note(samples: list[list[float]], others: dict | None, threads: int, cores: int) -> str:
    """Whether other jobs shared the machine during the run: the CPU time other processes took (``others``, from
    ``/proc/stat``, exact), or where that is missing, a load average above what the benchmark's own ``threads``
    explain. (A load average also counts what ran in the minute before the start, such as ``make``'s setup.)"""
    if others is not None:
        taken = (f"other processes took {others['core_seconds']:,.0f} core-seconds, {others['share']:.1%} of the "
                 f"{cores} cores over the {others['wall_seconds'] / 60:.1f} min run")
        if others["share"] > QUIET_SHARE:
            return (f"**Shared machine**: {taken}, so the timings are slower and noisier than on a quiet machine.")
        return f"Quiet machine: {taken}."
    samples = [sample for sample in samples if sample]
    if not samples:
        return "No load average or CPU accounting on this system."
    before, peak = samples[0][0], max(sample[0] for sample in samples[1:] or samples)
    if before > 0.5 or peak > threads + 0.5:
        return (f"**Shared machine**: 1-minute load {before:.1f} before the start and up to {peak:.1f} during the run "
                f"(this benchmark accounts for about {threads} of it, on {cores} cores): other jobs took CPU time, so "
                "the timings are slower and noisier than on a quiet machine.")
    return f"Quiet machine: 1-minute load {before:.1f} before, at most {peak:.1f} during the run."


def main(argv: list[str] | None = None) -> dict:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--out", type=Path, default=None,
                        help=f"folder for the result files (default {RESULTS}; a temporary folder with --quick)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="run only these")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--target", type=float, default=finetune.TARGET_ACCURACY, help="validation accuracy to reach")
    args = parser.parse_args(argv)
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-quick-")) if args.quick else RESULTS)
    loads = [common.load_average()]  # before anything starts, then after each section
    clock = common.cpu_clock()
    device = common.setup(args.device, args.threads)
    machine = common.machine_info(device)
    print("machine:", common.describe_machine(machine), flush=True)
    start = time.perf_counter()
    results: dict = {"machine": machine}

    def section(title: str, fn, report):
        print(f"\n== {title}", flush=True)
        begin = time.perf_counter()
        result = fn()
        result["section_seconds"] = time.perf_counter() - begin
        loads.append(common.load_average())
        print(report(result), f"\n({result['section_seconds']:.0f} s)", flush=True)
        return result

    log = lambda text: print(text, flush=True)  # noqa: E731
    if "finetune" in args.only:
        results["finetune"] = section(
            f"fine-tuning: time to {args.target:.2f} validation accuracy, and MFU",
            lambda: finetune.run(device, args.quick, tuple(args.seeds[:1] if args.quick else args.seeds), args.target,
                                 log=log), finetune.report)
    if "features" in args.only:
        results["features"] = section("inference: movie reviews to mean-pooled features",
                                      lambda: feature_extraction.run(device, quick=args.quick),
                                      feature_extraction.report)
    if "generation" in args.only:
        results["generation"] = section("generation: SmolLM2-135M, greedy",
                                        lambda: generation.run(device, quick=args.quick), generation.report)
    cores = machine["logical_cores"] or 1
    others = common.others_cpu(clock, common.cpu_clock(), cores)
    results["meta"] = {"command": " ".join(["python", "bench/run_all.py", *(sys.argv[1:] if argv is None else argv)]),
                       "quick": args.quick, "total_seconds": time.perf_counter() - start,
                       "load_average_start": loads[0], "load_average_end": loads[-1], "load_averages": loads,
                       "other_processes_cpu": others,
                       "load_note": load_note(loads, others, machine["torch_threads"], cores)}
    json_path, md_path = write(results, out, device.type)
    print(f"\n{markdown(results)}\nwrote {json_path} and {md_path}\n\nfor README.md:\n{readme_table(results)}")
    return results


if __name__ == "__main__":
    main()
