"""What a machine can run, decided in one place: processes, backend, device per rank, precision, and the
tolerances that go with the precision.

:func:`plan_devices` is a pure function of what the machine has (the number of GPUs, whether they compute bf16),
so it is tested for every kind of machine on any machine; :func:`machine_plan` asks this one. The lessons call
:func:`tolerance` wherever they compare two computations that may run in bf16 or on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from course_lib.runtime.errors import CourseInputError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DevicePlan:
    """How to run ``processes`` data-parallel workers on this machine."""

    processes: int
    backend: str  # "nccl" (GPUs) or "gloo" (CPU processes)
    devices: tuple[str, ...]  # the device of each local rank: "cuda:0", "cuda:1", ... or "cpu"
    precision: str  # "bf16", "fp16" (needs a gradient scaler) or "fp32"
    note: str  # one sentence saying what the plan does and, where it differs from what was asked, why

    @property
    def cuda(self) -> bool:
        return self.devices[0].startswith("cuda")

    @property
    def needs_scaler(self) -> bool:
        """fp16 underflows small gradients; a ``GradScaler`` scales the loss up and the gradients back down."""
        return self.precision == "fp16"


def plan_devices(processes: int = 2, cuda_devices: int = 0, bf16: bool = False, precision: str = "auto",
                 cpu_processes_ok: bool = True) -> DevicePlan:
    """The plan for ``processes`` data-parallel workers on a machine with ``cuda_devices`` GPUs.

    * enough GPUs: one process per GPU (local rank k on ``cuda:k``), NCCL;
    * fewer GPUs than processes: never a device that does not exist. With ``cpu_processes_ok`` the workers run
      as CPU processes with gloo (what a data-parallel demonstration needs: several processes); otherwise as many
      GPU processes as there are GPUs;
    * no GPU: CPU processes with gloo.

    ``precision="auto"`` picks bf16 on GPUs that compute it, fp16 with a gradient scaler on older GPUs, fp32 on
    CPU processes (bf16 autocast runs on CPUs too, but it is slow without native support; ask for it by name).
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise CourseInputError(f"processes must be a positive int, got {processes!r}")
    if isinstance(cuda_devices, bool) or not isinstance(cuda_devices, int) or cuda_devices < 0:
        raise CourseInputError(f"cuda_devices must be an int >= 0, got {cuda_devices!r}")
    if precision not in ("auto", *PRECISIONS):
        raise CourseInputError(f"precision must be one of auto, {', '.join(PRECISIONS)}; got {precision!r}")
    if cuda_devices >= processes:
        on_gpu, count, note = True, processes, f"{processes} process(es), one per GPU, NCCL"
    elif cuda_devices and not cpu_processes_ok:
        on_gpu, count = True, cuda_devices
        note = (f"{processes} processes asked, but this machine has {cuda_devices} GPU(s): running {count}, "
                "one per GPU")
    else:
        on_gpu, count = False, processes
        note = (f"{processes} CPU processes with gloo" if not cuda_devices else
                f"{processes} processes asked, but this machine has {cuda_devices} GPU(s): running {processes} "
                "CPU processes with gloo instead (a rank never asks for a GPU that does not exist)")
    if precision == "auto":
        precision = ("bf16" if bf16 else "fp16") if on_gpu else "fp32"
    if precision == "fp16" and not on_gpu:
        raise CourseInputError("fp16 training needs a GPU (CPU autocast computes bf16); ask for bf16 or fp32")
    devices = tuple(f"cuda:{rank}" for rank in range(count)) if on_gpu else ("cpu",) * count
    return DevicePlan(count, "nccl" if on_gpu else "gloo", devices, precision, f"{note}, {precision}")


def machine_plan(processes: int = 2, precision: str = "auto", cpu_processes_ok: bool = True) -> DevicePlan:
    """:func:`plan_devices` for this machine."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bf16 = bool(count) and torch.cuda.is_bf16_supported()
    return plan_devices(processes, count, bf16, precision, cpu_processes_ok)


# Tolerances for "these two computations are the same", as (atol, rtol) for torch.allclose.
#
# float32 has a 24-bit significand (relative spacing 6e-8); two correct implementations that add in different
# orders drift by a few hundred ulps over a model's depth, so 1e-5 absolute / 1e-4 relative is tight yet safe.
# bf16 keeps 8 bits (relative spacing 7.8e-3): one rounding of an activation moves it by up to 0.4%, so two
# correct bf16 runs agree only to about 1e-2 relative, more after training steps that compound the rounding.
# fp16 keeps 11 bits (4.9e-4). On CUDA, float32 matmuls may use TF32 (10-bit significand) and reductions run
# in a different order: ten times the CPU tolerance covers it.
_TOLERANCES = {
    (torch.float32, "cpu"): (1e-5, 1e-4),
    (torch.float32, "cuda"): (1e-4, 1e-3),
    (torch.float64, "cpu"): (1e-10, 1e-8),
    (torch.float64, "cuda"): (1e-10, 1e-8),
    (torch.bfloat16, "cpu"): (2e-2, 2e-2),
    (torch.bfloat16, "cuda"): (2e-2, 2e-2),
    (torch.float16, "cpu"): (2e-3, 2e-3),
    (torch.float16, "cuda"): (2e-3, 2e-3),
}
_NAMES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


def tolerance(dtype: torch.dtype | str = torch.float32, device: torch.device | str = "cpu",
              steps: int = 0) -> tuple[float, float]:
    """``(atol, rtol)`` for comparing two computations in ``dtype`` on ``device``; after ``steps`` training steps
    the rounding compounds, so both grow with the square root of the steps (independent roundings add in
    variance)."""
    dtype = _NAMES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    kind = torch.device(device).type if isinstance(device, (str, torch.device)) else None
    if (dtype, kind) not in _TOLERANCES:
        raise CourseInputError(f"no tolerance for {dtype} on {device!r}: dtypes {', '.join(_NAMES)} on cpu or cuda")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise CourseInputError(f"steps must be an int >= 0, got {steps!r}")
    atol, rtol = _TOLERANCES[dtype, kind]
    grow = max(1.0, steps ** 0.5)
    return atol * grow, rtol * grow
