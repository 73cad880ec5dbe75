"""Training-memory accounting (course_lib.train_memory): the counted bytes follow the tensors, the peak tracker
sees a real allocation, and a fresh process per configuration measures LoRA well below full fine-tuning."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from course_lib import train_memory
from course_lib.lora import apply_lora
from course_lib.runtime.errors import CourseInputError
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


def _tiny_lora_bert(checkpointing: bool):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    apply_lora(model, ("query", "value"), r=2, trainable_modules=("classifier",))
    with torch.no_grad():  # B starts at zero; make it non-zero so that every adapter matrix gets a gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def test_gradient_checkpointing_as_measured_gives_the_adapters_the_same_gradients():
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 1])
    grads = []
    for checkpointing in (False, True):
        model = _tiny_lora_bert(checkpointing)
        model(input_ids=ids, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    plain, recomputed = grads
    assert plain.keys() == recomputed.keys() and any("lora_A" in n for n in plain)
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name  # every adapter learns
        torch.testing.assert_close(recomputed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_gradient_checkpointing_lowers_the_measured_training_peak_of_lora_on_a_long_batch():
    plain = measure("encoder", "lora", "fp32", batch=16, tokens=128, steps=1, threads=1, timeout=300)
    recomputed = measure("encoder", "lora", "fp32", batch=16, tokens=128, steps=1, threads=1, timeout=300,
                         checkpointing=True)
    assert recomputed["checkpointing"] and not plain["checkpointing"]
    assert recomputed["counted"] == plain["counted"]  # the same state: only the activations differ
    assert recomputed["measured_training"] < 0.7 * plain["measured_training"], (plain, recomputed)


# ----------------------------------------------------------------------------------------------- refused input
@pytest.mark.parametrize("args, message", [
    ((-1, 0), "total must be an integer >= 0, got -1"),
    ((None, 0), "total must be an integer >= 0, got None"),
    ((10.5, 1), "total must be an integer >= 0, got 10.5"),
    ((True, 0), "total must be an integer >= 0, got True"),
    ((10, -1), "trainable must be an integer >= 0, got -1"),
    ((10, 1.0), "trainable must be an integer >= 0, got 1.0"),
    ((10, 20), r"trainable \(20\) cannot exceed total \(10\)"),
    ((10, 1, 0), "bytes_per_number must be an integer >= 1, got 0"),
    ((10, 1, -4), "bytes_per_number must be an integer >= 1, got -4"),
    ((10, 1, 2.5), "bytes_per_number must be an integer >= 1, got 2.5"),
    ((10, 1, "fp32"), "bytes_per_number must be an integer >= 1, got 'fp32'"),
])
def test_training_state_bytes_refuses_negative_counts_and_sizes(args, message):
    with pytest.raises(CourseInputError, match=message):
        training_state_bytes(*args)
    assert training_state_bytes(500, 0) == 2000 and training_state_bytes(10, 10, 2) == 80  # edge cases still fine


@pytest.mark.parametrize("model", [None, "decoder", [nn.Linear(2, 2)]])
def test_state_bytes_refuses_what_is_not_a_model(model):
    with pytest.raises(CourseInputError, match="model must be a torch nn.Module, got"):
        state_bytes(model)


BAD_RUNS = [
    (dict(model="gpt2"), "model must be one of 'decoder', 'encoder'; got 'gpt2'"),
    (dict(method="qlora"), "method must be one of 'full', 'lora'; got 'qlora'"),
    (dict(precision="fp16"), "precision must be one of 'fp32', 'bf16'; got 'fp16'"),
    (dict(precision=None), "precision must be one of 'fp32', 'bf16'; got None"),
    (dict(batch=0), "batch must be an integer >= 1, got 0"),
    (dict(tokens=-32), "tokens must be an integer >= 1, got -32"),
    (dict(steps=True), "steps must be an integer >= 1, got True"),
    (dict(steps=1.5), "steps must be an integer >= 1, got 1.5"),
    (dict(r=0), "r must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("change, message", BAD_RUNS + [
    (dict(threads=0), "threads must be an integer >= 1, got 0"),
    (dict(threads=2.0), "threads must be an integer >= 1, got 2.0"),
    (dict(timeout=0), "timeout must be a number > 0, got 0"),
    (dict(timeout=-1), "timeout must be a number > 0, got -1"),
    (dict(timeout=float("nan")), "timeout must be a number > 0, got nan"),
])
def test_measure_refuses_bad_settings_before_starting_a_process(monkeypatch, change, message):
    def no_process(*args, **kwargs):
        raise AssertionError("measure started a process for settings it should have refused")

    monkeypatch.setattr(subprocess, "run", no_process)
    with pytest.raises(CourseInputError, match=message):
        measure(**{**dict(model="encoder", method="lora", precision="fp32", batch=2, tokens=16, steps=1), **change})


@pytest.mark.parametrize("change, message", BAD_RUNS)
def test_run_one_refuses_bad_settings_before_loading_a_model(monkeypatch, change, message):
    def no_load(*args, **kwargs):
        raise AssertionError("run_one loaded a model for settings it should have refused")

    monkeypatch.setattr(train_memory, "_load", no_load)
    settings = {**dict(model="encoder", method="lora", precision="fp32", batch=2, tokens=16, steps=1, r=8), **change}
    with pytest.raises(CourseInputError, match=message):
        train_memory.run_one(settings.pop("model"), **settings)
