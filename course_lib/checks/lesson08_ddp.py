"""Exercise 08.ddp_loop of lesson 08: a data-parallel training loop written with ``torch.distributed``, run for real
in two CPU processes under torchrun and compared step by step with one process.

The student's function runs in every process that torchrun starts::

    def train_data_parallel(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
        ...
        return losses, state  # this rank's loss at every step; the weights it reads back from `checkpoint`

The check writes the function's source (with the imports it uses) to a file, starts it in two processes (gloo)
and compares it with **one process** that trains on the same data with the global batch (2 x ``batch_size``),
computed here: the loss at every step (the mean over the ranks: with equal shards it is the global batch's mean)
and the final weights, within :func:`course_lib.precision.tolerance`. Inside the processes the check records which
examples each rank read, which ranks saved the checkpoint, and whether a rank read it before rank 0 had written it
(rank 0's save is delayed by half a second, so that a missing barrier shows every time, not by chance).

Known mistakes are recognised by their **symptom**: each ``Mistake`` of this exercise is a :class:`Symptom`, which
describes what the mistake produces (its observation is made here, in this process) instead of running a wrong loop
in new processes once more. ``tests/test_checks_lesson08.py`` runs wrong loops written as students write them and
shows that each one is recognised.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from course_lib.checks import Case, Exercise, Mistake, register
from course_lib.precision import tolerance

EXAMPLES, FEATURES, CLASSES = 32, 8, 3
TIMEOUT = 60  # seconds for the two processes; a rank waiting at a collective another rank never reaches stops here
SAVE_DELAY = 0.5  # seconds rank 0 waits before writing the checkpoint


# ----------------------------------------------------------------------------------------------- data and model
class LoggedData(torch.utils.data.Dataset):
    """32 seeded examples of 8 features and 3 classes; remembers the index of every example it hands out."""

    def __init__(self):
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(EXAMPLES, FEATURES, generator=g)                  # (32, 8)
        self.y = torch.randint(0, CLASSES, (EXAMPLES,), generator=g)           # (32,)
        self.seen: list[int] = []

    def __len__(self) -> int:
        return EXAMPLES

    def __getitem__(self, index):
        self.seen.append(int(index))
        return self.x[index], self.y[index]


def make_model() -> nn.Module:
    """A small classifier, initialised from the global random state: seed before calling it."""
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES))


def _one_process(world_size, epochs, batch_size, lr, seed, lr_factor=1.0):
    """What the processes must reproduce: one process, the global batch, the same sampler order (in this process)."""
    from torch.utils.data import DataLoader, DistributedSampler

    with torch.random.fork_rng(devices=[]):
        data = LoggedData()
        torch.manual_seed(seed)
        model = make_model()
        sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=seed)
        loader = DataLoader(data, batch_size=world_size * batch_size, sampler=sampler)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr * lr_factor)
        losses = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for x, y in loader:                                                 # (2b, 8), (2b,)
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        shards = []
        for rank in range(world_size):  # the examples each rank must read, epoch after epoch
            shard = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            order = []
            for epoch in range(epochs):
                shard.set_epoch(epoch)
                order += list(shard)
            shards.append(order)
    return {"losses": losses, "state": model.state_dict(), "shards": shards, "epochs": epochs}


# ----------------------------------------------------------------------------------------------- the reference
def _reference_loop(make_model, dataset, epochs, batch_size, lr, checkpoint, seed=0):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    dist.init_process_group("gloo")               # RANK, WORLD_SIZE, MASTER_ADDR come from torchrun
    rank = dist.get_rank()
    torch.manual_seed(seed)                        # the same start on every rank (DDP broadcasts rank 0's anyway)
    model = DistributedDataParallel(make_model())
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed)   # rank r takes every world_size-th example
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                   # a new order every epoch, the same on every rank
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)    # the mean over this rank's batch
            optimizer.zero_grad()
            loss.backward()                        # DDP averages the gradients over the ranks here
            optimizer.step()
            losses.append(loss.item())
    if rank == 0:
        torch.save(model.module.state_dict(), checkpoint)
    dist.barrier()                                 # nobody reads the file before rank 0 has written it
    state = torch.load(checkpoint)
    dist.destroy_process_group()
    return losses, state


# ----------------------------------------------------------------------------------------------- in the processes
def run_rank(fn, folder: str) -> None:
    """Run ``fn`` in this torchrun process and write what it did to ``folder/rank-<r>.pt``."""
    folder = Path(folder)
    case = json.loads((folder / "case.json").read_text())
    rank = int(os.environ["RANK"])
    real_save, real_load = torch.save, torch.load
    saved, early = [], []

    def save(obj, f, *args, **kwargs):
        saved.append(rank)
        if rank == 0:
            time.sleep(SAVE_DELAY)
        real_save(obj, f, *args, **kwargs)
        if rank == 0:
            (folder / "written").touch()

    def load(f, *args, **kwargs):
        if not (folder / "written").exists():
            early.append(rank)
            deadline = time.monotonic() + 20
            while not (folder / "written").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return real_load(f, *args, **kwargs)

    torch.save, torch.load = save, load
    data = LoggedData()
    result = {"rank": rank, "error": None, "saved": saved, "early": early, "seen": data.seen}
    try:
        losses, state = fn(make_model, data, case["epochs"], case["batch_size"], case["lr"],
                           str(folder / "checkpoint.pt"), case["seed"])
        result["losses"] = [float(loss) for loss in losses]
        result["state"] = {k: v.detach().clone() for k, v in dict(state).items()}
    except Exception as error:  # reported by the check, then the process fails (torchrun stops the others)
        result["error"] = f"{type(error).__name__}: {error}"
        real_save(result, folder / f"rank-{rank}.pt")
        raise
    real_save(result, folder / f"rank-{rank}.pt")


def _code_names(code: types.CodeType) -> set[str]:
    found = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _code_names(const)
    return found


def _imports_for(fn) -> list[str]:
    """Import lines for the modules, classes and functions the function takes from its module's globals."""
    lines = []
    for name in sorted(_code_names(fn.__code__)):
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", "")
        if isinstance(value, types.ModuleType):
            lines.append(f"import {value.__name__} as {name}")
        elif module and module not in ("__main__", "builtins") and qualname and "." not in qualname \
                and not module.startswith("__"):
            lines.append(f"from {module} import {qualname} as {name}")
        elif isinstance(value, (bool, int, float, str)):
            lines.append(f"{name} = {value!r}")
    return lines


def run_in_processes(fn, world_size, epochs, batch_size, lr, seed) -> dict:
    """Start ``fn`` in ``world_size`` CPU processes under torchrun; what each rank did, gathered."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as error:
        raise RuntimeError("the check runs your function's source in new processes: define it with def in a cell "
                           f"(not a lambda), then run that cell ({error})") from None
    if "NotImplementedError" in source:
        raise NotImplementedError("the stub is still there")
    with tempfile.TemporaryDirectory(prefix="course-ddp-loop-") as tmp:
        folder = Path(tmp)
        (folder / "case.json").write_text(json.dumps(dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)))
        script = folder / "loop.py"
        script.write_text("\n".join(["import sys", *_imports_for(fn), "", source, "",
                                     "from course_lib.checks.lesson08_ddp import run_rank",
                                     f"run_rank({fn.__name__}, sys.argv[1])", ""]))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
                   f"--nproc_per_node={world_size}", str(script), str(folder)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        try:
            done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            return {"error": f"the {world_size} processes did not finish within {TIMEOUT} s: a rank waits at a "
                             "collective (barrier, all-reduce, the DDP backward) that another rank never reaches"}
        ranks = [torch.load(folder / f"rank-{r}.pt", weights_only=False) if (folder / f"rank-{r}.pt").exists()
                 else None for r in range(world_size)]
    errors = [f"rank {r}: {result['error']}" for r, result in enumerate(ranks) if result and result["error"]]
    if any(error.split(": ")[1] == "NotImplementedError" for error in errors):
        raise NotImplementedError("the stub is still there")
    if errors or done.returncode != 0 or None in ranks:
        tail = "\n".join(done.stderr.strip().splitlines()[-4:])
        return {"error": "; ".join(errors) or f"the processes failed (exit code {done.returncode}):\n{tail}"}
    return {"losses": [r["losses"] for r in ranks], "states": [r["state"] for r in ranks],
            "saved": sorted({rank for r in ranks for rank in r["saved"]}),
            "early": sorted({rank for r in ranks for rank in r["early"]}), "seen": [r["seen"] for r in ranks]}


# ----------------------------------------------------------------------------------------------- symptoms
@dataclass(frozen=True)
class Symptom:
    """A known mistake, described by what it produces. Called with a case like an answer, it gives its observation
    (computed in this process); :meth:`present` says whether a real run shows it."""

    kind: str
    description: str
    lr_factor: float = 1.0  # for the mistakes that change the size of every update

    def __call__(self, world_size, epochs, batch_size, lr, seed):
        reference = _one_process(world_size, epochs, batch_size, lr, seed)
        changed = _one_process(world_size, epochs, batch_size, lr, seed, self.lr_factor) if self.lr_factor != 1 \
            else reference
        return {"symptom": self, "reference": reference, "state": changed["state"]}

    def present(self, got: dict, observation: dict) -> bool:
        if "symptom" in got:
            return got["symptom"].kind == self.kind
        if "error" in got:
            return False
        reference, seen = observation["reference"], got["seen"]
        epochs, shard = reference["epochs"], EXAMPLES // len(seen)
        right_data = seen == reference["shards"]
        if self.kind == "plain sampler":
            return all(len(s) == EXAMPLES * epochs for s in seen)
        if self.kind == "per-rank sampler seed":
            return all(len(s) == shard * epochs for s in seen) and bool(set(seen[0][:shard]) & set(seen[1][:shard]))
        if self.kind == "no set_epoch":
            return all(len(s) == shard * epochs and s[:shard] == s[shard:2 * shard] for s in seen)
        if self.kind == "every rank saves":
            return len(got["saved"]) > 1
        if self.kind == "no barrier":
            return bool(got["early"])
        if self.kind == "unseeded":
            atol, rtol = tolerance("fp32", "cpu", 1)
            first = sum(losses[0] for losses in got["losses"] if losses) / len(seen)
            return right_data and abs(first - reference["losses"][0]) > atol + rtol * abs(reference["losses"][0])
        return right_data and _first_parameter_difference(got["states"][0], observation["state"], 1) is None


def _first_parameter_difference(got: dict, expected: dict, steps: int) -> str | None:
    """The first parameter (in the model's order) that differs beyond the tolerance after ``steps`` steps."""
    if not isinstance(got, dict) or sorted(got) != sorted(expected):
        keys = sorted(got) if isinstance(got, dict) else type(got).__name__
        return (f"the checkpoint holds {keys}, expected the parameters {sorted(expected)}: save "
                "model.module.state_dict() (the model inside DDP, without the 'module.' prefix)")
    atol, rtol = tolerance("fp32", "cpu", steps)
    for name, value in expected.items():
        mine = got[name]
        if not isinstance(mine, torch.Tensor) or mine.shape != value.shape:
            return f"parameter {name}: expected a tensor of shape {tuple(value.shape)}, got {mine!r:.60}"
        if not torch.allclose(mine.float(), value, atol=atol, rtol=rtol):
            return (f"parameter {name} differs from one process's by up to {(mine.float() - value).abs().max():.2e} "
                    f"(tolerance {atol:.1e} + {rtol:.1e} x |w|)")
    return None


def _compare(got, expected) -> str | None:
    """``expected`` is the one-process run, or a symptom's observation when the framework tries a known mistake."""
    if isinstance(expected, dict) and "symptom" in expected:
        return None if expected["symptom"].present(got, expected) else "another mistake"
    if "symptom" in got:
        return got["symptom"].description
    if "error" in got:
        return got["error"]
    if "shards" in got:  # the one-process run itself, as the reference is run
        got = {"losses": [got["losses"]], "states": [got["state"]], "saved": [0], "early": [], "seen": got["shards"]}
    steps = len(expected["losses"])
    per_step = EXAMPLES * expected["epochs"] // steps
    counts = [len(losses) for losses in got["losses"]]
    if set(counts) != {steps}:
        return (f"the ranks took {counts} steps; one process with the global batch takes {steps} "
                f"({expected['epochs']} epochs of {EXAMPLES} examples, {per_step} per step)")
    atol, rtol = tolerance("fp32", "cpu", steps)
    for step in range(steps):
        mean = sum(losses[step] for losses in got["losses"]) / len(got["losses"])
        want = expected["losses"][step]
        if abs(mean - want) > atol + rtol * abs(want):
            epoch, within = divmod(step, steps // expected["epochs"])
            return (f"step {step + 1} (epoch {epoch + 1}, step {within + 1}): the ranks' mean loss is {mean:.5f}, "
                    f"one process has {want:.5f}")
    for rank, state in enumerate(got["states"]):
        problem = _first_parameter_difference(state, expected["state"], steps)
        if problem:
            return f"the weights rank {rank} read back from the checkpoint: {problem}"
    if got["saved"] != [0]:
        return f"ranks {got['saved']} called torch.save; only rank 0 should write the checkpoint"
    if got["early"]:
        return f"rank(s) {got['early']} read the checkpoint before rank 0 had written it"
    return None


def _adapt(fn):
    """The student's loop runs in two processes; the reference is one process (here); a symptom observes itself."""
    if isinstance(fn, Symptom):
        return fn
    if fn is _reference_loop:
        return _one_process
    return lambda *case: run_in_processes(fn, *case)


register(Exercise(
    name="08.ddp_loop",
    title="a data-parallel training loop: process group, DistributedSampler, DDP, rank-0 save, barrier",
    reference=_reference_loop,
    cases=[Case((2, 2, 4, 0.5, 0), label="2 processes x batch 4, 2 epochs of 32 examples, SGD lr 0.5, seed 0")],
    adapt=_adapt,
    compare=_compare,
    level="core",
    minutes=30,
    hints=(
        "Each process builds the same model, wraps it in DistributedDataParallel (which averages the gradients "
        "during backward), reads only its shard of the data through a DistributedSampler whose order changes "
        "every epoch, and trains as usual; rank 0 alone writes the checkpoint, and everyone waits at a barrier "
        "before reading it.",
        "dist.init_process_group('gloo'); torch.manual_seed(seed); model = DistributedDataParallel(make_model()); "
        "sampler = DistributedSampler(dataset, shuffle=True, seed=seed); loader = DataLoader(dataset, batch_size="
        "batch_size, sampler=sampler); every epoch sampler.set_epoch(epoch); after training: if dist.get_rank() == "
        "0: torch.save(model.module.state_dict(), checkpoint); dist.barrier(); state = torch.load(checkpoint); "
        "dist.destroy_process_group().",
    ),
    mistakes=[
        Mistake(Symptom("plain sampler", "each rank read the whole data set every epoch"),
                "every rank went through all the data: a plain DataLoader (shuffle=True or a RandomSampler) "
                "ignores the other processes. Use sampler=DistributedSampler(dataset, ...), which gives rank r "
                "every world_size-th example of one shared order."),
        Mistake(Symptom("per-rank sampler seed", "the ranks' shards overlap"),
                "the ranks' shards overlap: each rank shuffled with its own seed, so their orders differ. Give every "
                "rank the same seed (DistributedSampler(dataset, shuffle=True, seed=seed)); the sampler splits one "
                "shared order by rank."),
        Mistake(Symptom("no set_epoch", "the second epoch repeats the first epoch's order"),
                "epoch 2 read the examples in epoch 1's order: DistributedSampler shuffles with seed + epoch, and "
                "the epoch only changes when you call sampler.set_epoch(epoch) at the start of every epoch."),
        Mistake(Symptom("loss divided by world size", "every update is half as large", lr_factor=0.5),
                "the updates are half as large as one process's: DDP already averages the gradients over the ranks "
                "(it divides their sum by world_size); dividing the loss by world_size again halves every step."),
        Mistake(Symptom("lr scaled by world size", "every update is twice as large", lr_factor=2.0),
                "the updates are twice as large as one process's: the learning rate was multiplied by the number of "
                "processes. The global batch (2 x batch_size) is one process's batch here, so the lr stays as it is."),
        Mistake(Symptom("unseeded", "the first step's loss differs: another starting model"),
                "the very first loss differs, with the right data: the model started from other weights. Call "
                "torch.manual_seed(seed) before make_model() (DDP then broadcasts rank 0's weights to the others, "
                "but rank 0's must be the seeded ones)."),
        Mistake(Symptom("every rank saves", "both ranks wrote the checkpoint"),
                "every rank wrote the checkpoint: the ranks hold the same weights, so only rank 0 should save "
                "(if dist.get_rank() == 0: torch.save(...)); several writers of one file can leave it corrupt."),
        Mistake(Symptom("no barrier", "a rank read the checkpoint before it was written"),
                "a rank read the checkpoint before rank 0 had finished writing it: call dist.barrier() after the "
                "save and before torch.load, so that every rank waits for rank 0."),
    ],
))
