"""Data-parallel training with the real torchrun and Trainer (course_lib.ddp_train), on this machine's CPUs.

Two processes with batch b (gloo) must end where one process with batch 2b ends, step by step (losses and
gradient norms) and in the final weights; a run stopped after a checkpoint and resumed in a new process must
end where the uninterrupted run ends. The same comparison in bf16 autocast (which runs on CPUs too) holds with
the bf16 tolerance of ``course_lib.precision.tolerance``. Six short runs of a 2-layer MiniLM slice; a minute or
two on 2 cores.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import ddp_train
from course_lib.precision import plan_devices, tolerance
from course_lib.runtime.errors import CourseInputError

STEPS, BATCH, SAVE = 12, 8, 6
# float noise between batch shapes and the gloo all-reduce, grown over the steps; one step moves a weight ~3e-4
LOSS_ATOL, LOSS_RTOL = tolerance("fp32", "cpu", STEPS)
WEIGHT_TOL = LOSS_ATOL


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
        "bf16_one": (root / "bf16_one", ddp_train.launch(root / "bf16_one", 1, batch_size=2 * BATCH, device="cpu",
                                                         precision="bf16", **common)),
        "bf16_two": (root / "bf16_two", ddp_train.launch(root / "bf16_two", 2, batch_size=BATCH, device="cpu",
                                                         precision="bf16", **common)),
    }


@pytest.mark.slow
def test_two_processes_ran_with_gloo_and_split_each_batch(runs):
    one, two = runs["one"][1], runs["two"][1]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["backend"] == "gloo" and two["device"] == "cpu" and two["devices"] == ["cpu", "cpu"]
    assert two["precision"] == one["precision"] == "fp32" and two["plan"] == "2 CPU processes with gloo, fp32"
    assert one["examples_per_second"] > 0 and two["examples_per_second"] > 0
    assert one["global_batch"] == two["global_batch"] == 2 * BATCH and two["per_device_batch"] == BATCH
    assert one["train_rows"] == two["train_rows"] == STEPS * 2 * BATCH
    assert one["steps_done"] == two["steps_done"] == STEPS


@pytest.mark.slow
def test_two_processes_with_batch_b_follow_one_process_with_batch_2b(runs):
    one, two = runs["one"][1], runs["two"][1]
    assert one["losses"].keys() == two["losses"].keys() and len(one["losses"]) == STEPS
    for step in one["losses"]:
        assert two["losses"][step] == pytest.approx(one["losses"][step], abs=LOSS_ATOL, rel=LOSS_RTOL), step
        assert two["grad_norms"][step] == pytest.approx(one["grad_norms"][step], rel=1e-3), step
    difference = ddp_train.max_weight_difference(runs["one"][0], runs["two"][0])
    assert difference < WEIGHT_TOL, f"max |Δweight| = {difference:.2e}"
    assert two["eval"]["eval_accuracy"] == one["eval"]["eval_accuracy"]
    assert two["eval"]["eval_loss"] == pytest.approx(one["eval"]["eval_loss"], abs=LOSS_ATOL, rel=LOSS_RTOL)


@pytest.mark.slow
def test_in_bf16_autocast_two_processes_follow_one_within_the_bf16_tolerance(runs):
    import torch

    one, two = runs["bf16_one"][1], runs["bf16_two"][1]
    assert one["precision"] == two["precision"] == "bf16" and two["devices"] == ["cpu", "cpu"]
    atol, rtol = tolerance("bf16", "cpu", STEPS)
    for step in one["losses"]:
        assert two["losses"][step] == pytest.approx(one["losses"][step], abs=atol, rel=rtol), step
    a, b = ddp_train.final_weights(runs["bf16_one"][0]), ddp_train.final_weights(runs["bf16_two"][0])
    for name in a:
        assert a[name].dtype == torch.float32, name  # autocast: the weights themselves stay float32
        assert torch.allclose(b[name], a[name], atol=atol, rtol=rtol), name
    # bf16 rounding is visible: the bf16 runs differ from each other more than the fp32 runs do
    assert ddp_train.max_weight_difference(runs["bf16_one"][0], runs["bf16_two"][0]) > \
        ddp_train.max_weight_difference(runs["one"][0], runs["two"][0])


@pytest.mark.parametrize("gpus,bf16,processes,backend,devices,precision", [
    (0, False, 2, "gloo", ("cpu", "cpu"), "fp32"),
    (1, True, 2, "gloo", ("cpu", "cpu"), "fp32"),        # one GPU, two ranks: CPU processes, never cuda:1
    (2, True, 2, "nccl", ("cuda:0", "cuda:1"), "bf16"),  # local rank k on cuda:k
    (8, False, 2, "nccl", ("cuda:0", "cuda:1"), "fp16"),
])
def test_the_plan_never_places_a_rank_on_a_missing_gpu(monkeypatch, gpus, bf16, processes, backend, devices,
                                                       precision):
    from course_lib import precision as precision_module

    monkeypatch.setattr(precision_module, "machine_plan",
                        lambda n, p="auto", ok=True: plan_devices(n, gpus, bf16, p, ok))
    monkeypatch.setattr(ddp_train, "get_device", lambda: __import__("torch").device("cuda" if gpus else "cpu"))
    plan = ddp_train.run_plan(processes)
    assert (plan.processes, plan.backend, plan.devices, plan.precision) == (processes, backend, devices, precision)
    assert ddp_train.plan_options(plan) == {"device": "auto" if gpus >= processes else "cpu", "precision": precision}
    cpu = ddp_train.run_plan(processes, "cpu", "bf16")
    assert cpu.devices == ("cpu",) * processes and cpu.backend == "gloo" and cpu.precision == "bf16"


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
    with pytest.raises(ValueError, match="processes must be an integer >= 1"):
        ddp_train.command(tmp_path, 0)


@pytest.mark.parametrize("argv,message", [
    (["--stop-after", "5", "--save-steps", "2"], "multiple of --save-steps"),
    (["--stop-after", "12"], "between 1 and --steps - 1"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--resume-from", "/nonexistent/checkpoint-6"], "not a Trainer checkpoint folder"),
])
def test_bad_arguments_get_one_clear_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        ddp_train.parse_args(["--output-dir", str(tmp_path), *argv])
    assert message in capsys.readouterr().err


def test_a_failed_run_raises_with_the_end_of_its_output(tmp_path):
    # more steps than the quick split has reviews for: the options are fine, the run itself stops
    with pytest.raises(RuntimeError, match=r"failed \(exit code 1\)[\s\S]*asked for 800000 training reviews"):
        ddp_train.launch(tmp_path / "bad", 1, steps=100_000, timeout=120)
    assert not (tmp_path / "bad" / ddp_train.RUN_LOG).exists()


# ----------------------------------------------------------------------------------------------- bad inputs
def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def run_script(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib.ddp_train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})


def assert_one_line_usage_error(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and re.search(message, done.stderr), done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("python -m course_lib.ddp_train: error: ")


@pytest.mark.parametrize("argv,message", [
    (["--learning-rate", "-1"], r"--learning-rate must be a number in \(0, 1\], got -1.0"),
    (["--learning-rate", "0"], r"--learning-rate must be a number in \(0, 1\], got 0.0"),
    (["--learning-rate", "nan"], r"--learning-rate must be a number in \(0, 1\], got nan"),
    (["--learning-rate", "inf"], r"--learning-rate must be a number in \(0, 1\], got inf"),
    (["--save-steps", "-2"], r"--save-steps must be an integer >= 0, got -2"),
    (["--stop-after", "-1"], r"--stop-after must be an integer >= 0, got -1"),
    (["--steps", "-5"], r"--steps must be an integer >= 1, got -5"),
    (["--grad-accum", "0"], r"--grad-accum must be an integer >= 1, got 0"),
    (["--eval-rows", "0"], r"--eval-rows must be an integer >= 1, got 0"),
    (["--layers", "7"], r"--layers must be a number in \[1, 6\], got 7"),
    (["--max-length", "4096"], r"--max-length must be a number in \[1, 512\], got 4096"),
    (["--seed", "-1"], r"--seed must be a number in \[0, 4294967295\], got -1"),
    (["--seed", "4294967296"], r"--seed must be a number in \[0, 4294967295\], got 4294967296"),
    (["--steps", "twelve"], r"argument --steps: invalid int value: 'twelve'"),
])
def test_the_script_refuses_a_bad_number_with_status_2_one_line_and_no_files(tmp_path, argv, message):
    done = run_script("--output-dir", str(tmp_path / "run"), *argv, cwd=tmp_path)
    assert_one_line_usage_error(done, message)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("output_dir,message", [("file", r"--output-dir must be a folder, but \S+/file is a file"),
                                                ("", r"--output-dir must be a folder path .*got ''")])
def test_the_script_refuses_an_output_dir_that_cannot_be_a_folder(tmp_path, output_dir, message):
    (tmp_path / "file").write_text("mine")
    done = run_script("--output-dir", str(tmp_path / output_dir) if output_dir else "", cwd=tmp_path)
    assert_one_line_usage_error(done, message)
    assert tree(tmp_path) == ["file"] and (tmp_path / "file").read_text() == "mine"


def test_the_script_refuses_an_unknown_course_device_before_loading_anything(tmp_path):
    done = run_script("--output-dir", str(tmp_path / "run"), cwd=tmp_path, COURSE_DEVICE="gpu")
    assert_one_line_usage_error(done, r"COURSE_DEVICE='gpu' is not a device name: .*cpu")
    assert tree(tmp_path) == []


@pytest.fixture
def no_process(monkeypatch):
    """Fail the test if ``launch`` starts a process."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(ddp_train.subprocess, "run", refuse)


@pytest.mark.parametrize("options,message", [
    (dict(learning_rate=-1), r"^--learning-rate must be a number in \(0, 1\], got -1$"),
    (dict(learning_rate=float("nan")), r"^--learning-rate must be a number in \(0, 1\], got nan$"),
    (dict(save_steps=-6), r"^--save-steps must be an integer >= 0, got -6$"),
    (dict(steps="12"), r"^--steps must be an integer >= 1, got '12'$"),
    (dict(batch_size=0), r"^--batch-size must be an integer >= 1, got 0$"),
    (dict(layers=7), r"^--layers must be a number in \[1, 6\], got 7$"),
    (dict(seed=-1), r"^--seed must be a number in \[0, 4294967295\], got -1$"),
    (dict(stop_after=6), r"^--stop-after must be a multiple of --save-steps"),
    (dict(resume_from="nowhere/checkpoint-6"), r"^--resume-from 'nowhere/checkpoint-6' is not a Trainer checkpoint"),
    (dict(batchsize=8), r"^unknown option\(s\) batchsize: the script takes .*batch_size"),
    (dict(precision="fp16"), r"^--precision must be one of 'auto', 'fp32', 'bf16'; got 'fp16'$"),
    (dict(device="cuda:1"), r"^--device must be one of 'auto', 'cpu'; got 'cuda:1'$"),
])
def test_command_and_launch_check_the_options_before_any_process_starts(tmp_path, no_process, options, message):
    with pytest.raises(CourseInputError, match=message):
        ddp_train.command(tmp_path / "run", 2, **options)
    with pytest.raises(CourseInputError, match=message):
        ddp_train.launch(tmp_path / "run", 1, timeout=5, **options)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("processes", [0, -1, 1.5, "2", True, None])
def test_command_and_launch_need_a_positive_process_count(tmp_path, no_process, processes):
    for call in (ddp_train.command, ddp_train.launch):
        with pytest.raises(CourseInputError, match=r"^processes must be an integer >= 1, got "):
            call(tmp_path / "run", processes)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("output_dir", [None, "", 3, "file"])
def test_command_and_launch_need_an_output_folder(tmp_path, no_process, output_dir):
    (tmp_path / "file").write_text("mine")
    where = tmp_path / "file" if output_dir == "file" else output_dir
    for call in (ddp_train.command, ddp_train.launch):
        with pytest.raises(CourseInputError, match=r"^--output-dir must be a folder"):
            call(where, 1)
    assert tree(tmp_path) == ["file"]


@pytest.mark.parametrize("arguments,message", [
    (dict(timeout=0), r"^timeout must be a number > 0, got 0$"),
    (dict(timeout=float("nan")), r"^timeout must be a number > 0, got nan$"),
    (dict(timeout="60"), r"^timeout must be a number > 0, got '60'$"),
    (dict(threads=0), r"^threads must be an integer >= 1, got 0$"),
    (dict(threads=1.5), r"^threads must be an integer >= 1, got 1.5$"),
])
def test_launch_checks_its_own_arguments_before_any_process_starts(tmp_path, no_process, arguments, message):
    with pytest.raises(CourseInputError, match=message):
        ddp_train.launch(tmp_path / "run", 1, **arguments)
    assert tree(tmp_path) == []


@pytest.mark.parametrize("layers,seed,message", [
    (0, 0, r"^layers must be a number in \[1, 6\], got 0$"),
    (7, 0, r"^layers must be a number in \[1, 6\], got 7$"),
    (2.5, 0, r"^layers must be an integer >= 1, got 2.5$"),
    ("2", 0, r"^layers must be a number in \[1, 6\], got '2'$"),
    (2, -1, r"^seed must be a number in \[0, 4294967295\], got -1$"),
])
def test_build_model_checks_layers_and_seed(layers, seed, message):
    with pytest.raises(CourseInputError, match=message):
        ddp_train.build_model(layers, seed)


@pytest.mark.parametrize("arguments,message", [
    ((0, 64, 48, 0), r"^rows must be an integer >= 1, got 0$"),
    (("16", 64, 48, 0), r"^rows must be an integer >= 1, got '16'$"),
    ((16, 0, 48, 0), r"^eval_rows must be an integer >= 1, got 0$"),
    ((16, 64, 0, 0), r"^max_length must be a number in \[1, 512\], got 0$"),
    ((16, 64, 513, 0), r"^max_length must be a number in \[1, 512\], got 513$"),
    ((16, 64, 48, -1), r"^seed must be a number in \[0, 4294967295\], got -1$"),
])
def test_build_data_checks_its_sizes_and_seed(arguments, message):
    with pytest.raises(CourseInputError, match=message):
        ddp_train.build_data(*arguments)


def test_the_weight_readers_need_run_folders(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "good" / ddp_train.FINAL_DIR).mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "good" / ddp_train.FINAL_DIR / "model.safetensors"))
    (tmp_path / "file").write_text("mine")
    for bad in (None, 3, "", tmp_path / "file"):
        with pytest.raises(CourseInputError, match=r"^output_dir must be a folder"):
            ddp_train.final_weights(bad)
        with pytest.raises(CourseInputError, match=r"^run_a must be a folder"):
            ddp_train.max_weight_difference(bad, tmp_path / "good")
        with pytest.raises(CourseInputError, match=r"^run_b must be a folder"):
            ddp_train.max_weight_difference(tmp_path / "good", bad)
    with pytest.raises(FileNotFoundError, match="did the run finish"):
        ddp_train.final_weights(tmp_path / "missing")
    assert ddp_train.max_weight_difference(tmp_path / "good", tmp_path / "good") == 0


def test_parse_args_needs_a_list_of_strings():
    with pytest.raises(CourseInputError, match=r"^argv must be a list of strings"):
        ddp_train.parse_args("--output-dir runs/one")
