"""Data-parallel training with the real torchrun and Trainer (course_lib.ddp_train), on this machine's CPUs.

Two processes with batch b (gloo) must end where one process with batch 2b ends, step by step (losses and
gradient norms) and in the final weights; a run stopped after a checkpoint and resumed in a new process must
end where the uninterrupted run ends. Four short runs of a 2-layer MiniLM slice; about a minute on 2 cores.
"""
from __future__ import annotations

import sys

import pytest

from course_lib import ddp_train

STEPS, BATCH, SAVE = 12, 8, 6
WEIGHT_TOL = 2e-5  # float noise between batch shapes and the gloo all-reduce; one step moves a weight ~3e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    common = dict(steps=STEPS, timeout=300, threads=1)
    return {
        "one": (root / "one", ddp_train.launch(root / "one", 1, batch_size=2 * BATCH, **common)),
        "two": (root / "two", ddp_train.launch(root / "two", 2, batch_size=BATCH, save_steps=SAVE, **common)),
        "stopped": (root / "stopped", ddp_train.launch(root / "stopped", 2, batch_size=BATCH, save_steps=SAVE,
                                                       stop_after=SAVE, **common)),
        "resumed": (root / "resumed", ddp_train.launch(
            root / "resumed", 2, batch_size=BATCH, save_steps=SAVE,
            resume_from=root / "stopped" / f"checkpoint-{SAVE}", **common)),
    }


@pytest.mark.slow
def test_two_processes_ran_with_gloo_and_split_each_batch(runs):
    one, two = runs["one"][1], runs["two"][1]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["backend"] == "gloo" and two["device"] == "cpu"
    assert one["global_batch"] == two["global_batch"] == 2 * BATCH and two["per_device_batch"] == BATCH
    assert one["train_rows"] == two["train_rows"] == STEPS * 2 * BATCH
    assert one["steps_done"] == two["steps_done"] == STEPS


@pytest.mark.slow
def test_two_processes_with_batch_b_follow_one_process_with_batch_2b(runs):
    one, two = runs["one"][1], runs["two"][1]
    assert one["losses"].keys() == two["losses"].keys() and len(one["losses"]) == STEPS
    for step in one["losses"]:
        assert two["losses"][step] == pytest.approx(one["losses"][step], abs=1e-5), step
        assert two["grad_norms"][step] == pytest.approx(one["grad_norms"][step], rel=1e-3), step
    difference = ddp_train.max_weight_difference(runs["one"][0], runs["two"][0])
    assert difference < WEIGHT_TOL, f"max |Δweight| = {difference:.2e}"
    assert two["eval"]["eval_accuracy"] == one["eval"]["eval_accuracy"]
    assert two["eval"]["eval_loss"] == pytest.approx(one["eval"]["eval_loss"], abs=1e-5)


@pytest.mark.slow
def test_the_weights_moved_so_the_comparison_means_something(runs):
    import torch

    from course_lib.ddp_train import build_model

    start = {k: v for k, v in build_model(2, 0).state_dict().items()}
    final = ddp_train.final_weights(runs["one"][0])
    moved = max((final[k].float() - start[k].float()).abs().max().item() for k in final if k in start)
    assert moved > 50 * WEIGHT_TOL
    assert torch.equal(final["bert.embeddings.word_embeddings.weight"], start["bert.embeddings.word_embeddings.weight"])


@pytest.mark.slow
def test_a_stopped_run_resumed_in_new_processes_ends_like_the_uninterrupted_one(runs):
    stopped_dir, stopped = runs["stopped"]
    assert stopped["steps_done"] == SAVE and stopped["stopped_after"] == SAVE
    assert not (stopped_dir / ddp_train.FINAL_DIR).exists()
    two, resumed = runs["two"][1], runs["resumed"][1]
    assert resumed["resumed_from"].endswith(f"checkpoint-{SAVE}") and resumed["steps_done"] == STEPS
    # steps 1-6 come back with the checkpoint's log; steps 7-12 were computed by the new processes
    assert sorted(map(int, resumed["losses"])) == list(range(1, STEPS + 1))
    for step, loss in resumed["losses"].items():
        assert loss == pytest.approx(two["losses"][step], abs=1e-6), step
        assert resumed["grad_norms"][step] == pytest.approx(two["grad_norms"][step], rel=1e-5), step
    assert ddp_train.max_weight_difference(runs["two"][0], runs["resumed"][0]) < 1e-6
    assert resumed["eval"] == pytest.approx(two["eval"], abs=1e-6)


def test_command_uses_torchrun_for_several_processes(tmp_path):
    single = ddp_train.command(tmp_path, 1, batch_size=16, stop_after=None)
    assert single[:3] == [sys.executable, "-m", "course_lib.ddp_train"] and "--batch-size=16" in single
    assert not any("stop" in part for part in single)
    double = ddp_train.command(tmp_path, 2, batch_size=8)
    assert double[1:6] == ["-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
                           "--nproc_per_node=2"]
    assert double[6:8] == ["-m", "course_lib.ddp_train"]
    with pytest.raises(ValueError, match="at least 1 process"):
        ddp_train.command(tmp_path, 0)


@pytest.mark.parametrize("argv,message", [
    (["--stop-after", "5", "--save-steps", "2"], "multiple of --save-steps"),
    (["--stop-after", "12"], "between 1 and --steps - 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--resume-from", "/nonexistent/checkpoint-6"], "not a Trainer checkpoint folder"),
])
def test_bad_arguments_get_one_clear_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        ddp_train.parse_args(["--output-dir", str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_a_failed_run_raises_with_the_end_of_its_output(tmp_path):
    with pytest.raises(RuntimeError, match=r"failed \(exit code 2\)[\s\S]*--layers must be at least 1"):
        ddp_train.launch(tmp_path / "bad", 1, layers=0, timeout=120)
    assert not (tmp_path / "bad" / ddp_train.RUN_LOG).exists()
