"""How much memory a training step takes: counted from the tensors, and measured in a fresh process (lesson 08).

Training holds, besides the activations of the current batch, three kinds of state:

* the weights, every parameter (frozen or not);
* one gradient per trainable parameter;
* AdamW's two running averages (first and second moment) per trainable parameter.

:func:`state_bytes` adds them up from a model's real tensors (their dtypes included). :func:`measure` runs one
configuration in a new Python process (so nothing left from an earlier run counts) and reports the peak:
``torch.cuda.max_memory_allocated`` on a GPU; on a CPU the process's peak resident memory (Linux ``VmHWM``,
reset after loading the model, so loading's own transient copies do not count), minus what it held before::

    python -m course_lib.train_memory --model decoder --method lora --precision fp32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from course_lib.runtime.validate import CourseInputError, nonnegative_int, number, one_of, positive_int

METHODS = ("full", "lora")
PRECISIONS = ("fp32", "bf16")
MODELS = ("decoder", "encoder")


def training_state_bytes(total: int, trainable: int, bytes_per_number: int = 4) -> int:
    """Bytes for weights (all ``total`` parameters), gradients and AdamW's two moments (``trainable`` only),
    every number ``bytes_per_number`` bytes (4 for float32, 2 for bfloat16)."""
    nonnegative_int("total", total), positive_int("bytes_per_number", bytes_per_number)
    if nonnegative_int("trainable", trainable) > total:
        raise CourseInputError(f"trainable ({trainable}) cannot exceed total ({total}): total counts every parameter, "
                               "trainable or frozen")
    return bytes_per_number * (total + trainable + 2 * trainable)


def state_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of weights, gradients and AdamW moments the model needs for training, from its parameters."""
    if not isinstance(model, torch.nn.Module):
        raise CourseInputError(f"model must be a torch nn.Module, got {type(model).__name__}")
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"weights": weights, "gradients": trainable, "adamw": 2 * trainable,
            "total": weights + 3 * trainable}


# ----------------------------------------------------------------------------------------------- peak memory
def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class PeakResidentMemory:
    """Peak resident memory of this process since :meth:`reset`: Linux's ``VmHWM`` when it can be reset,
    else a sampling thread (every millisecond) on other systems."""

    def __init__(self):
        self._status = Path(f"/proc/{os.getpid()}/status")
        self._clear = Path(f"/proc/{os.getpid()}/clear_refs")
        self.exact = self._status.exists() and self._clear.exists()
        self._peak = 0
        self._thread = None

    def reset(self) -> None:
        if self.exact:
            self._clear.write_text("5")  # "5" resets the peak resident set size (VmHWM) to the current one
            return
        import threading

        self._peak, self._stop = _rss_bytes(), threading.Event()

        def sample():
            while not self._stop.wait(0.001):
                self._peak = max(self._peak, _rss_bytes())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def peak(self) -> int:
        if self.exact:
            for line in self._status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
            raise RuntimeError("no VmHWM line in /proc/self/status")
        self._stop.set()
        self._thread.join()
        return max(self._peak, _rss_bytes())


# ----------------------------------------------------------------------------------------------- one run
def _load(model_name: str, precision: str, device: torch.device):
    from transformers.utils import logging as hf_logging

    from course_lib import assets

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    hf_logging.set_verbosity_error()
    if model_name == "decoder":
        model = assets.load_decoder(attn_implementation="sdpa", dtype=dtype)
        targets, vocab = ("q_proj", "v_proj"), model.config.vocab_size
    else:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(assets.encoder_path(), num_labels=2, dtype=dtype,
                                                                   attn_implementation="sdpa")
        targets, vocab = ("query", "value"), model.config.vocab_size
    return model.to(device), targets, vocab


def run_one(model_name: str, method: str, precision: str, batch: int, tokens: int, steps: int, r: int,
            checkpointing: bool = False) -> dict:
    """Load, (wrap with LoRA), and take ``steps`` AdamW steps on random tokens; report counted and peak bytes.
    ``checkpointing`` keeps only each layer's input for the backward pass and recomputes the rest there."""
    _check_run(model_name, method, precision, batch=batch, tokens=tokens, steps=steps, r=r)
    from course_lib.lora import apply_lora
    from course_lib.settings import get_device, seed_everything

    device = get_device()
    cuda = device.type == "cuda"
    seed_everything(0)
    import transformers  # the code to load comes before the baseline: import memory is not weights

    transformers.LlamaForCausalLM, transformers.BertForSequenceClassification  # noqa: B018  (lazy modules load)
    import gc

    gc.collect()
    before_load = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    model, targets, vocab = _load(model_name, precision, device)
    if method == "lora":
        trainable = ("classifier",) if model_name == "encoder" else ()
        apply_lora(model, targets, r=r, alpha=2 * r, trainable_modules=trainable)
        with torch.no_grad():  # adapters in float32 on a bf16 base, as peft keeps them by default
            for name, parameter in model.named_parameters():
                if "lora_" in name:
                    parameter.data = parameter.data.float()
    model.train()
    if checkpointing:  # non-reentrant: gradients reach the adapters even though the frozen inputs need none
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not cuda:  # own the weights: loading may leave them as views of the memory-mapped file
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.data = tensor.data.clone()
    gc.collect()
    loaded = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab, (batch, tokens), generator=generator).to(device)  # (B, T)
    labels = input_ids if model_name == "decoder" else torch.zeros(batch, dtype=torch.long, device=device)
    tracker = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        tracker = PeakResidentMemory()
        tracker.reset()
    start = time.perf_counter()
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / steps
    peak_training = (torch.cuda.max_memory_allocated() if cuda else tracker.peak()) - loaded
    counted = state_bytes(model)
    return {
        "model": model_name, "method": method, "precision": precision, "device": device.type,
        "measured_with": "torch.cuda.max_memory_allocated" if cuda else
        ("VmHWM (peak resident set)" if tracker.exact else "sampled resident set"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "counted": counted,
        "measured_weights": loaded - before_load,          # what loading (and wrapping) added
        "measured_training": peak_training,                # peak above that during the steps
        "measured_total": loaded - before_load + peak_training,
        "seconds_per_step": round(seconds, 3),
        "batch": batch, "tokens": tokens, "steps": steps, "checkpointing": checkpointing,
    }


def measure(model: str = "decoder", method: str = "lora", precision: str = "fp32", batch: int = 2,
            tokens: int = 32, steps: int = 2, r: int = 8, threads: int | None = None, timeout: float = 600,
            checkpointing: bool = False) -> dict:
    """:func:`run_one` in a fresh Python process (its memory starts clean); returns its report."""
    _check_run(model, method, precision, batch=batch, tokens=tokens, steps=steps, r=r)
    number("timeout", timeout, 0, low_open=True)
    command = [sys.executable, "-m", "course_lib.train_memory", "--model", model, "--method", method,
               "--precision", precision, "--batch", str(batch), "--tokens", str(tokens), "--steps", str(steps),
               "--r", str(r)] + (["--checkpointing"] if checkpointing else [])
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(positive_int("threads", threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the memory run {model}/{method}/{precision} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check_run(model: str, method: str, precision: str, **sizes: int) -> None:
    one_of("model", model, MODELS), one_of("method", method, METHODS), one_of("precision", precision, PRECISIONS)
    for name, size in sizes.items():
        positive_int(name, size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.train_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="decoder")
    parser.add_argument("--method", choices=METHODS, default="lora")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (recompute activations)")
    args = parser.parse_args(argv)
    for name in ("batch", "tokens", "steps", "r"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    import course_lib  # noqa: F401  (offline mode)

    report = run_one(args.model, args.method, args.precision, args.batch, args.tokens, args.steps, args.r, args.checkpointing)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
