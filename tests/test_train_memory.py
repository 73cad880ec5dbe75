"""Training-memory accounting (course_lib.train_memory): the counted bytes follow the tensors, the peak tracker
sees a real allocation, and a fresh process per configuration measures LoRA well below full fine-tuning."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from course_lib.lora import apply_lora
from course_lib.train_memory import measure, state_bytes, training_state_bytes


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).to(dtype)


def test_counted_bytes_are_weights_plus_gradients_and_two_adamw_moments_of_the_trainable_part():
    model = _model()
    total = sum(p.numel() for p in model.parameters())
    assert state_bytes(model) == {"weights": 4 * total, "gradients": 4 * total, "adamw": 8 * total,
                                  "total": 16 * total}
    apply_lora(model, ["0", "2"], r=2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * (32 + 64) + 2 * (64 + 8)
    counted = state_bytes(model)
    assert counted["gradients"] == 4 * trainable and counted["adamw"] == 8 * trainable
    assert counted["total"] == training_state_bytes(sum(p.numel() for p in model.parameters()), trainable)


def test_bfloat16_weights_count_two_bytes_each():
    assert state_bytes(_model(torch.bfloat16))["total"] * 2 == state_bytes(_model())["total"]


def test_adamw_really_keeps_two_states_of_each_trainable_parameter():
    model = apply_lora(_model(), ["2"], r=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(4, 32)).sum().backward()
    optimizer.step()
    moments = sum(v.numel() * v.element_size() for state in optimizer.state.values()
                  for k, v in state.items() if k in ("exp_avg", "exp_avg_sq"))
    assert moments == state_bytes(model)["adamw"]


def test_peak_tracker_sees_a_freed_allocation():
    # A fresh process: in a long test session the allocator may hand back pages that are resident already.
    script = (
        "import torch\n"
        "from course_lib.train_memory import PeakResidentMemory, _rss_bytes\n"
        "tracker = PeakResidentMemory(); tracker.reset(); start = _rss_bytes()\n"
        "block = torch.ones(64 * 2**20 // 4)  # 64 MiB, written, so resident\n"
        "del block\n"
        "print(tracker.peak() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) >= 60 * 2**20


@pytest.mark.slow
def test_lora_needs_far_less_training_memory_than_full_fine_tuning_measured_in_fresh_processes():
    full = measure("encoder", "full", "fp32", batch=4, tokens=16, steps=1, threads=1, timeout=300)
    lora = measure("encoder", "lora", "fp32", batch=4, tokens=16, steps=1, threads=1, timeout=300)
    assert full["trainable"] == full["parameters"] and lora["trainable"] < 0.01 * lora["parameters"]
    for run in (full, lora):  # the counted state is a floor: activations and temporary buffers come on top
        assert run["measured_total"] >= 0.9 * run["counted"]["total"], run
    assert lora["measured_total"] < 0.6 * full["measured_total"], (lora, full)
