"""The benchmarks: the facts their method rests on (padding and the attention kernel change no logit, the FLOP
count matches PyTorch's counter, the naive recipe shares hf-default's arithmetic), and the entry point in smoke
mode (``bench/run_all.py --quick``), whose result files must carry every field the report is built from.
No timing is asserted."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune  # bench/ is on pytest's pythonpath (pyproject.toml): the benchmarks import each other by name
import flops

ROOT = Path(__file__).resolve().parents[1]

REVIEWS = ["A warm, funny film.", "Two hours of my life I will not get back, and the popcorn was stale too.",
           "Flat.", "The cast is superb, but the script gives them nothing to do for the last forty minutes."]


def _batch(tokenizer, pad_to):
    features = finetune.encode(REVIEWS, [1, 0, 0, 1], tokenizer, pad_to)
    return finetune.collator(tokenizer)(features)


@pytest.fixture(scope="module")
def tokenizer():
    from course_lib.assets import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def eager_model():
    return finetune.new_classifier(finetune.naive_recipe(), seed=0, device=torch.device("cpu")).eval()


def test_padding_to_512_leaves_the_eager_logits_of_a_batch_unchanged(tokenizer, eager_model):
    dynamic, padded = _batch(tokenizer, None), _batch(tokenizer, 512)
    assert padded["input_ids"].shape == (4, 512) and dynamic["input_ids"].shape[1] < 30
    assert torch.equal(padded["attention_mask"].sum(1), dynamic["attention_mask"].sum(1))
    with torch.no_grad():
        short, long = finetune.logits_of(eager_model, dynamic), finetune.logits_of(eager_model, padded)  # (4, 2)
    torch.testing.assert_close(long, short, rtol=1e-4, atol=1e-5)


def test_eager_and_sdpa_attention_give_the_same_logits(tokenizer, eager_model):
    sdpa = finetune.new_classifier(finetune.hf_default_recipe(), seed=0, device=torch.device("cpu")).eval()
    assert sdpa.config._attn_implementation == "sdpa" and eager_model.config._attn_implementation == "eager"
    batch = _batch(tokenizer, None)
    with torch.no_grad():
        torch.testing.assert_close(finetune.logits_of(sdpa, batch), finetune.logits_of(eager_model, batch),
                                   rtol=1e-4, atol=1e-5)


def test_naive_recipe_differs_from_hf_default_only_in_padding_and_attention():
    naive, default = dataclasses.asdict(finetune.naive_recipe()), dataclasses.asdict(finetune.hf_default_recipe())
    assert naive["same_arithmetic_as"] == default["name"] == "hf-default"
    changed = {key for key in naive if naive[key] != default[key]}
    assert changed == {"name", "source", "same_arithmetic_as", "pad_to", "attention"}
    assert (naive["pad_to"], naive["attention"], default["pad_to"]) == (512, "eager", None)


def test_hf_default_recipe_is_what_trainer_uses_without_arguments(tmp_path):
    from transformers import TrainingArguments

    trainer = TrainingArguments(output_dir=str(tmp_path))
    recipe = finetune.hf_default_recipe()
    assert (recipe.batch_size, recipe.learning_rate, recipe.weight_decay, recipe.schedule_epochs) == (
        trainer.per_device_train_batch_size, trainer.learning_rate, trainer.weight_decay, trainer.num_train_epochs)
    assert str(trainer.lr_scheduler_type.value) == "linear" and not (trainer.bf16 or trainer.fp16)


def test_training_flop_count_matches_torch_flop_counter(tokenizer, eager_model):
    from torch.utils.flop_counter import FlopCounterMode

    model = finetune.new_classifier(finetune.hf_default_recipe(), seed=0, device=torch.device("cpu")).train()
    batch = _batch(tokenizer, None)  # (4, T)
    counter = FlopCounterMode(display=False)
    with counter:
        finetune.logits_of(model, batch).sum().backward()
    expected = flops.training_flops([tuple(batch["input_ids"].shape)], model.config)
    assert counter.get_total_flops() == expected


def test_training_flops_grow_with_padding_but_useful_flops_do_not(tokenizer, eager_model):
    config = eager_model.config
    lengths = _batch(tokenizer, None)["attention_mask"].sum(1).tolist()
    useful = flops.useful_training_flops(lengths, config)
    assert useful < flops.training_flops([(4, max(lengths))], config) < flops.training_flops([(4, 512)], config)
    assert useful == sum(flops.training_flops([(1, n)], config) for n in lengths)


def test_flop_count_rejects_a_negative_length():
    with pytest.raises(ValueError, match="tokens >= 0"):
        flops.forward_flops(-1, 384, 1536, 6)


SPIN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end:\n    pass\n"


@pytest.mark.skipif(not Path("/proc/stat").exists() or not hasattr(os, "waitid"), reason="reads /proc/stat")
def test_cpu_accounting_counts_other_processes_and_not_the_benchmarks_own_work():
    import common

    cores = os.cpu_count() or 1
    start = common.cpu_clock()
    exec(SPIN.format(seconds=1.0))  # the benchmark's own work
    own = common.cpu_clock()
    assert own["own"] - start["own"] >= 0.9  # counted as the benchmark's own
    assert own["machine_busy"] - start["machine_busy"] >= 0.9  # and as the machine's
    # another process: its time is read before it is reaped, so it is not one of this process's finished children
    other = subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=1.5)])
    os.waitid(os.P_PID, other.pid, os.WEXITED | os.WNOWAIT)
    end = common.cpu_clock()
    other.wait()
    taken = common.others_cpu(own, end, cores)
    assert taken["core_seconds"] >= 1.2 and 0 < taken["share"] <= 1


def test_others_cpu_is_the_machines_busy_time_less_the_benchmarks_own():
    import common

    start = {"machine_busy": 100.0, "own": 10.0, "wall": 0.0}
    end = {"machine_busy": 400.0, "own": 290.0, "wall": 150.0}  # 300 core-s busy, 280 of them the benchmark's
    assert common.others_cpu(start, end, cores=2) == {"core_seconds": 20.0, "share": round(20 / 300, 4),
                                                      "wall_seconds": 150.0}
    assert common.others_cpu(start, None, cores=2) is None


def test_load_note_says_shared_only_when_others_took_cpu_time():
    import run_all

    quiet = {"core_seconds": 3.0, "share": 0.001, "wall_seconds": 1000.0}
    busy = {"core_seconds": 600.0, "share": 0.3, "wall_seconds": 1000.0}
    high_load = [[1.6, 1.3, 1.4], [2.0, 2.0, 1.8]]  # e.g. make's setup in the minute before the start
    assert run_all.load_note(high_load, quiet, 2, 2).startswith("Quiet machine")
    assert run_all.load_note(high_load, busy, 2, 2).startswith("**Shared machine**")
    assert "30.0%" in run_all.load_note(high_load, busy, 2, 2)
    assert run_all.load_note(high_load, None, 2, 2).startswith("**Shared machine**")  # load average only
    assert run_all.load_note([[0.1, 0.1, 0.1], [2.0, 2.0, 1.0]], None, 2, 2).startswith("Quiet machine")


# ----------------------------------------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--threads", "1",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"results": json.loads((out / "results.json").read_text()), "markdown": (out / "results.md").read_text(),
            "stdout": done.stdout}


def test_mean_pooled_head_averages_the_real_tokens_only(tokenizer):
    from course_lib.pooling import masked_mean

    recipe = dataclasses.replace(finetune.course_recipe(), pooling="mean")
    model = finetune.new_classifier(recipe, 0, torch.device("cpu")).eval()
    batch = _batch(tokenizer, None)
    with torch.no_grad():
        logits = finetune.logits_of(model, batch)  # (4, 2)
        alone = finetune.logits_of(model, _single(tokenizer, REVIEWS[2]))  # the shortest review, unpadded
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"]).last_hidden_state  # (4, T, 384)
        expected = model.classifier(masked_mean(hidden, batch["attention_mask"]))
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(logits[2], alone[0], atol=1e-5, rtol=0)  # padding changes nothing


def _single(tokenizer, text):
    return finetune.collator(tokenizer)(finetune.encode([text], [0], tokenizer, None))


def test_layer_decay_gives_each_layer_its_rate_and_frozen_embeddings_get_none():
    recipe = dataclasses.replace(finetune.course_recipe(), layer_decay=0.5, freeze_embeddings=True)
    model = finetune.new_classifier(recipe, 0, torch.device("cpu"))
    groups = finetune.parameter_groups(model, recipe)
    rate = recipe.learning_rate
    assert [group["lr"] for group in groups] == pytest.approx([rate * 0.5 ** (7 - layer) for layer in range(1, 7)]
                                                              + [rate])  # layers 1-6, then the head
    assert not any(p.requires_grad for p in model.base_model.embeddings.parameters())
    assert sum(len(group["params"]) for group in groups) == sum(p.requires_grad for p in model.parameters())
    plain = finetune.parameter_groups(finetune.new_classifier(finetune.course_recipe(), 0, torch.device("cpu")),
                                      finetune.course_recipe())
    assert {group["lr"] for group in plain} == {rate}  # no decay: one rate for every parameter


def test_the_reduced_precision_column_runs_only_where_the_hardware_computes_it():
    mixed = finetune.course_mixed_recipe()
    assert mixed.mixed_precision and not finetune.course_recipe().mixed_precision
    on_cpu = finetune.autocast_dtype(mixed, torch.device("cpu"))
    assert on_cpu == (torch.bfloat16 if finetune.cpu_has_bf16() else None)
    assert finetune.autocast_dtype(finetune.course_recipe(), torch.device("cpu")) is None


@pytest.mark.slow
def test_smoke_run_describes_the_machine_and_its_load(smoke):
    machine, meta = smoke["results"]["machine"], smoke["results"]["meta"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["torch_threads"] == 1
    assert machine["device"] == "cpu" and machine["gpu"] is None
    assert machine["torch"] and machine["transformers"] and "avx2" in machine["cpu_flags"]
    assert len(meta["load_averages"]) == 4 and meta["load_note"]  # before, then after each of three sections
    if Path("/proc/stat").exists():
        assert 0 <= meta["other_processes_cpu"]["share"] <= 1 and meta["other_processes_cpu"]["wall_seconds"] > 0
    assert "machine:" in smoke["stdout"] and machine["cpu"] in smoke["markdown"]


@pytest.mark.slow
def test_every_recipe_trains_and_the_naive_one_is_timed_at_its_real_padding(smoke):
    ft = smoke["results"]["finetune"]
    recipes = {recipe["name"]: recipe for recipe in ft["recipes"]}
    mixed = {"course, bfloat16"} if finetune.cpu_has_bf16() else set()  # the bf16 column: native bf16 only
    assert set(recipes) == {"course", "hf-default", "naive"} | mixed
    runs = {run["recipe"]: run for run in ft["runs"]}
    for name in ("course", "hf-default"):
        run = runs[name]
        assert run["measured"] == "run to the target"
        assert run["steps"] * recipes[name]["batch_size"] >= run["examples"] > (run["steps"] - 1) * recipes[name][
            "batch_size"]
        assert run["examples"] >= ft["setup"]["max_examples"] or run["reached"]
        assert run["curve"] and all(0.0 <= point["accuracy"] <= 1.0 for point in run["curve"])
        assert run["first_loss"] > 0 and math.isfinite(run["last_loss"]) and 0 <= run["final_accuracy"] <= 1
        assert run["tokens"] >= run["real_tokens"] > 0 and run["flops"] >= run["useful_flops"] > 0
    naive = runs["naive"]
    assert naive["padded_length"] == recipes["naive"]["pad_to"] and naive["steps"] == ft["setup"]["timed_steps"]
    assert naive["tokens"] == naive["steps"] * recipes["naive"]["batch_size"] * recipes["naive"]["pad_to"]
    assert naive["steps_to_target"] == runs["hf-default"]["steps_to_target"]


@pytest.mark.slow
def test_speed_claims_are_withheld_unless_every_run_reached_the_target(smoke):
    summary = smoke["results"]["finetune"]["summary"]
    for name, speed in summary["speedup_of_course_over"].items():
        reached = summary["course"]["all_reached"] and summary[name]["all_reached"]
        assert speed["valid"] == reached and (speed["median_time_ratio"] is None) == (not reached)


@pytest.mark.slow
def test_mfu_is_measured_against_a_peak_from_the_same_run(smoke):
    ft = smoke["results"]["finetune"]
    assert "float32" in ft["mfu"] and set(ft["mfu"]) == set(ft["peaks"]["peaks"])
    for name, m in ft["mfu"].items():
        assert m["peak_flops_per_second"] == ft["peaks"]["peaks"][name]["flops_per_second"] > 0
        assert m["mfu"] == pytest.approx(m["flops_per_second"] / m["peak_flops_per_second"])
        assert m["useful_mfu"] <= m["mfu"]


@pytest.mark.slow
def test_the_three_feature_extractors_give_the_same_features(smoke):
    fx = smoke["results"]["features"]
    assert set(fx["texts_per_second"]) == {"course extract_features", "pipeline loop", "onnxruntime"}
    assert fx["same_features"] is True and fx["feature_shape"] == [fx["texts"], 384]
    # the one-at-a-time loop encodes a sample, compared with the course's features of those same reviews
    assert 0 < fx["texts_encoded"]["pipeline loop"] < fx["texts"] == fx["texts_encoded"]["onnxruntime"]
    assert all(diff <= fx["tolerance"] for diff in fx["max_abs_diff_vs_course"].values())
    assert fx["folds"] == 3
    assert all(s["min"] <= s["median"] <= s["max"] for s in fx["texts_per_second_by_fold"].values())


def test_folds_are_put_back_in_order():
    import feature_extraction

    whole = np.arange(22 * 2, dtype=np.float32).reshape(22, 2)  # (n, D)
    assert np.array_equal(feature_extraction.interleave([whole[k::3] for k in range(3)]), whole)


def test_a_way_is_called_faster_or_slower_only_when_every_fold_says_so():
    import feature_extraction as fe

    def result(course, other):
        spread = lambda values: {"min": min(values), "max": max(values)}  # noqa: E731
        return {"texts_per_second": {fe.COURSE: sum(course) / 3, fe.ONNX: sum(other) / 3},
                "texts_per_second_by_fold": {fe.COURSE: spread(course), fe.ONNX: spread(other)}}

    assert fe.compare_folds(result([250, 255, 260], [270, 280, 275]), fe.ONNX).startswith("faster")
    assert fe.compare_folds(result([250, 255, 260], [200, 210, 240]), fe.ONNX).startswith("slower")
    overlap = fe.compare_folds(result([250, 255, 260], [258, 280, 275]), fe.ONNX)
    assert overlap.startswith("as fast as the course") and "1.06x" in overlap


@pytest.mark.slow
def test_generation_runs_with_and_without_cache_to_the_same_tokens(smoke):
    generation = smoke["results"]["generation"]
    assert {"course decoder, KV cache", "course decoder, no cache"} <= set(generation["tokens_per_second"])
    assert generation["same_tokens"] is True and all(n >= 1 for n in generation["new_tokens"].values())
    assert generation["runs_compared"] == 3 * (1 + generation["repeats"])  # every run, not the last of each


@pytest.mark.slow
def test_markdown_report_has_every_table_and_marks_smoke_mode(smoke):
    text = smoke["markdown"]
    for heading in ("## Fine-tuning: time to 0.80", "## Distance to the machine's limit", "## Inference",
                    "## Generation"):
        assert heading in text
    assert "| course |" in text and "| hf-default |" in text and "| naive |" in text and "(estimated)" in text
    assert "(hf-default's)" in text  # the estimated naive runs' accuracies are marked as borrowed
    assert "smoke mode" in text


def test_readme_quotes_the_recorded_cpu_run():
    """The numbers README.md gives under "Benchmarks" are those of bench/results/results.json."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = " ".join(readme[readme.index("## Benchmarks"):readme.index("## Tests")].split())  # lines joined
    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text(encoding="utf-8"))
    assert not results["meta"]["quick"]
    ft, fx, gen = results["finetune"], results["features"], results["generation"]
    course, hf = ft["summary"]["course"]["time_to_target"], ft["summary"]["hf-default"]["time_to_target"]
    speedups = ft["summary"]["speedup_of_course_over"]
    quoted = [f"{course['median']:.1f} s median ({course['min']:.1f}-{course['max']:.1f} over 3 seeds)",
              f"{hf['median']:.1f} s median", f"**{speedups['hf-default']['median_time_ratio']:.1f}x**",
              f"{speedups['hf-default']['per_seed']['min']:.1f}x-{speedups['hf-default']['per_seed']['max']:.1f}x",
              f"**{speedups['naive']['median_time_ratio']:.0f}x**",
              *(f"held-out accuracy {ft['summary']['course']['final_accuracy']['mean']:.3f}",
                f"held-out {ft['summary']['hf-default']['final_accuracy']['mean']:.3f}"),
              *(f"{m['mfu']:.1%}".replace("%", " %") for m in ft["mfu"].values()),
              *(f"{rate:.0f}" for rate in fx["texts_per_second"].values()),
              f"{fx['texts_per_second']['onnxruntime'] / fx['texts_per_second']['course extract_features']:.2f}x",
              *(f"{t['median']:.1f} tokens/s" if name.endswith("KV cache") else f"{t['median']:.1f}"
                for name, t in gen["tokens_per_second"].items()),
              f"{fx['texts_encoded']['pipeline loop']:,}", f"{fx['texts']:,} reviews",
              f"{results['meta']['other_processes_cpu']['share']:.1%}".replace("%", " %")]
    if "bfloat16" in ft["mfu"]:  # the bf16 column, where the machine computed bf16 natively
        half, full = ft["mfu"]["bfloat16"], ft["mfu"]["float32"]
        mixed = ft["summary"]["speedup_of_course_mixed_over"]["hf-default"]
        quoted += [f"{half['tokens_per_second'] / full['tokens_per_second']:.2f}x float32's tokens",
                   f"**{mixed['median_time_ratio']:.1f}x**"]
    else:
        assert "no native bf16" in section, "README should say why the bf16 column is missing"
    missing = [text for text in quoted if text not in section]
    assert not missing, f"README's benchmark section does not quote the recorded run: {missing}"
    import feature_extraction

    # what README says of onnxruntime's speed and of the held-out accuracies follows from the run
    said_faster = "faster in each of 3 timed folds" in section
    assert said_faster == feature_extraction.compare_folds(fx, "onnxruntime").startswith("faster")
    held_out = [run["final_accuracy"] for run in ft["runs"] if run["recipe"] == "course"]
    below = [value for value in held_out if value < ft["setup"]["target"]]
    assert ("below the target there" in section) == bool(below)
    if below:
        count = {1: "one", 2: "two", 3: "three"}[len(below)]
        assert f"{count} of the three course runs" in section and all(f"{v:.3f}" in section for v in below)
