"""The benchmark entry point in smoke mode (``bench/run_all.py --quick``): it runs end to end, both fine-tuning
recipes really train, and the result files carry every field the report is built from. No timing is asserted."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # loads the encoder three times and SmolLM2 three times


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--threads", "1",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"results": json.loads((out / "results.json").read_text()), "markdown": (out / "results.md").read_text(),
            "stdout": done.stdout}


def test_smoke_run_describes_the_machine_it_ran_on(smoke):
    machine = smoke["results"]["machine"]
    assert machine["cpu"] and machine["logical_cores"] >= 1 and machine["torch_threads"] == 1
    assert machine["device"] == "cpu" and machine["gpu"] is None
    assert machine["torch"] and machine["transformers"]
    assert "machine:" in smoke["stdout"] and machine["cpu"] in smoke["markdown"]


def test_both_fine_tuning_recipes_train_on_the_same_examples_and_score_in_range(smoke):
    ft = smoke["results"]["finetune"]
    recipes = {recipe["name"]: recipe for recipe in ft["recipes"]}
    assert recipes["naive"]["batch_size"] == 8 and recipes["naive"]["attention"] == "eager"
    assert recipes["naive"]["max_length"] is not None and not recipes["naive"]["group_by_length"]
    assert recipes["course"]["batch_size"] == 32 and recipes["course"]["attention"] == "sdpa"
    assert recipes["course"]["max_length"] is None and recipes["course"]["group_by_length"]
    assert {run["recipe"] for run in ft["runs"]} == {"naive", "course"}
    for run in ft["runs"]:
        assert run["examples"] == ft["budget"]["train_examples"] > 0
        assert run["steps"] == math.ceil(run["examples"] / recipes[run["recipe"]]["batch_size"])
        for loss in ("first_loss", "final_loss", "mean_loss"):
            assert math.isfinite(run[loss]) and run[loss] > 0, (run["recipe"], loss, run[loss])
        assert 0.0 <= run["validation"]["accuracy"] <= 1.0 and math.isfinite(run["validation"]["loss"])
        assert run["weight_change"] > 0, f"{run['recipe']} did not change the model's weights"
        assert run["samples_per_second"] > 0 and run["train_seconds"] > 0
        assert 0.0 <= run["padding_share"] < 1.0


def test_padding_up_front_wastes_more_tokens_than_padding_per_batch(smoke):
    summary = smoke["results"]["finetune"]["summary"]
    naive, course = (summary[name]["padding_share"]["median"] for name in ("naive", "course"))
    assert naive > course


def test_fine_tuning_summary_has_speedup_and_accuracy_spread(smoke):
    summary = smoke["results"]["finetune"]["summary"]
    for name in ("naive", "course"):
        for field in ("samples_per_second", "train_seconds", "wall_seconds", "accuracy", "final_loss"):
            stats = summary[name][field]
            assert set(stats) >= {"median", "min", "max", "mean", "stdev", "n"}
            assert stats["min"] <= stats["median"] <= stats["max"]
    speedup = summary["speedup"]
    assert speedup["samples_per_second_ratio"] > 0 and math.isfinite(speedup["accuracy_difference"])


def test_inference_compares_course_encoder_with_transformers_sdpa_and_eager_on_equal_outputs(smoke):
    inference = smoke["results"]["inference"]
    assert set(inference["seconds"]) == {"course Encoder", "transformers BertModel (sdpa)",
                                         "transformers BertModel (eager)"}
    assert set(inference["ratios"]) == {"course_over_sdpa", "course_over_eager", "eager_over_sdpa"}
    assert all(diff < 1e-4 for diff in inference["max_abs_diff_vs_sdpa"].values())


def test_generation_runs_course_decoder_with_and_without_cache_and_transformers_to_the_same_tokens(smoke):
    generation = smoke["results"]["generation"]
    assert set(generation["tokens_per_second"]) == {"course decoder, KV cache", "course decoder, no cache",
                                                    "transformers generate (sdpa)", "transformers generate (eager)"}
    assert generation["same_tokens"] is True
    assert all(n >= 1 for n in generation["new_tokens"].values())


def test_markdown_report_has_a_table_per_benchmark_and_marks_smoke_mode(smoke):
    text = smoke["markdown"]
    for heading in ("## Fine-tuning throughput", "## Inference", "## Generation"):
        assert heading in text
    assert "| naive |" in text and "| course |" in text
    assert "smoke mode" in text
