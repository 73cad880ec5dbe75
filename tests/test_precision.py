"""Device planning and precision tolerances, for every kind of machine (the plan is a pure function)."""
from __future__ import annotations

import pytest
import torch

from course_lib.precision import machine_plan, plan_devices, tolerance
from course_lib.runtime.errors import CourseInputError


def test_cpu_only_machine_runs_gloo_processes_in_fp32():
    plan = plan_devices(2, cuda_devices=0)
    assert (plan.processes, plan.backend, plan.devices, plan.precision) == (2, "gloo", ("cpu", "cpu"), "fp32")
    assert not plan.cuda and not plan.needs_scaler
    assert plan_devices(2, 0, precision="bf16").precision == "bf16"  # CPU autocast computes bf16 when asked


def test_one_gpu_never_gives_rank_one_a_device_that_does_not_exist():
    plan = plan_devices(2, cuda_devices=1, bf16=True)
    assert plan.devices == ("cpu", "cpu") and plan.backend == "gloo" and "1 GPU" in plan.note
    gpu_only = plan_devices(2, cuda_devices=1, bf16=True, cpu_processes_ok=False)
    assert gpu_only.devices == ("cuda:0",) and gpu_only.processes == 1 and gpu_only.backend == "nccl"


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_several_gpus_one_process_per_local_rank(gpus):
    plan = plan_devices(2, cuda_devices=gpus, bf16=True)
    assert plan.devices == ("cuda:0", "cuda:1") and plan.backend == "nccl" and plan.precision == "bf16"


def test_precision_follows_what_the_gpu_computes():
    assert plan_devices(2, 2, bf16=True).precision == "bf16"
    old = plan_devices(2, 2, bf16=False)
    assert old.precision == "fp16" and old.needs_scaler
    assert plan_devices(2, 2, bf16=True, precision="fp32").precision == "fp32"
    with pytest.raises(CourseInputError, match="fp16 training needs a GPU"):
        plan_devices(2, 0, precision="fp16")


def test_this_machine_gets_a_plan_it_can_run():
    plan = machine_plan(2)
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device in plan.devices:
        assert device == "cpu" or int(device.split(":")[1]) < available


@pytest.mark.parametrize("bad", [dict(processes=0), dict(processes=True), dict(cuda_devices=-1),
                                 dict(precision="fp8")])
def test_bad_plans_are_refused(bad):
    with pytest.raises(CourseInputError):
        plan_devices(**bad)


def test_tolerances_follow_the_precision_of_the_format():
    fp32, bf16, fp16 = tolerance("fp32"), tolerance(torch.bfloat16), tolerance("fp16", "cuda:0")
    assert fp32[1] < fp16[1] < bf16[1]
    # each relative tolerance is at least the format's spacing, so one rounding always fits
    for dtype, (_, rtol) in ((torch.float32, fp32), (torch.bfloat16, bf16), (torch.float16, fp16)):
        assert rtol >= torch.finfo(dtype).eps
    assert tolerance("fp32", "cuda")[1] > fp32[1]  # TF32 and another reduction order on GPUs
    assert tolerance("bf16", steps=16) == pytest.approx(tuple(4 * t for t in bf16))


def test_a_bf16_computation_fits_its_tolerance_and_not_the_float32_one():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 256, generator=generator), torch.randn(256, 64, generator=generator)
    exact = a @ b
    rounded = (a.bfloat16() @ b.bfloat16()).float()
    atol, rtol = tolerance("bf16")
    scale = exact.abs().max()  # compare at the scale of the result: a sum of 256 products
    assert torch.allclose(rounded / scale, exact / scale, atol=atol, rtol=rtol)
    atol32, rtol32 = tolerance("fp32")
    assert not torch.allclose(rounded / scale, exact / scale, atol=atol32, rtol=rtol32)


@pytest.mark.parametrize("bad", [dict(dtype=torch.int64), dict(device="mps"), dict(steps=-1)])
def test_unknown_precisions_are_refused(bad):
    with pytest.raises(CourseInputError):
        tolerance(**bad)
