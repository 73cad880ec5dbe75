"""One training script for one process or many: data-parallel fine-tuning with ``Trainer`` (lesson 08).

The same file runs alone or under ``torchrun``; ``Trainer`` (through accelerate) reads the environment that
torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``), joins the process group (gloo on
CPUs, nccl on GPUs), wraps the model in ``DistributedDataParallel`` and gives each process its own share of
every batch::

    python -m course_lib.ddp_train --output-dir runs/one --batch-size 16                 # 1 process, batch 16
    torchrun --standalone --nproc_per_node 2 -m course_lib.ddp_train --output-dir runs/two --batch-size 8

The model is a small slice of the course encoder (its first ``--layers`` layers, MiniLM) with a fresh
two-class head, trained on movie reviews with dropout off and the examples in a fixed, seeded order (no
shuffling by the sampler), so that two processes with batch b see, at every step, exactly the 2b examples
that one process with batch 2b sees. Rank 0 writes ``run.json`` (settings, losses per step, final metrics)
and the final weights (``final/model.safetensors``) into ``--output-dir``; checkpoints go to
``--output-dir/checkpoint-<step>`` every ``--save-steps`` steps. ``--stop-after`` ends a run early (a
simulated interruption); ``--resume-from`` continues from a checkpoint folder.

Which device each process uses, the backend and the precision come from :func:`run_plan`
(``course_lib.precision``): one process per GPU (local rank k on ``cuda:k``, nccl) where there are enough GPUs,
CPU processes with gloo otherwise, so that no rank ever asks for a GPU that does not exist. ``--device cpu``
keeps every process on the CPU (what a comparison with CPU processes needs on a one-GPU machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from course_lib.runtime.validate import CourseInputError, folder, nonnegative_int, number, one_of, positive_int
from course_lib.settings import MAX_SEED, get_device, seed_everything

RUN_LOG = "run.json"
FINAL_DIR = "final"
ENCODER_LAYERS = 6  # all-MiniLM-L6-v2
MAX_TOKENS = 512  # its position embeddings
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_lib.ddp_train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="folder for run.json, checkpoints and final weights")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps (default 12)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per process per step (default 8)")
    parser.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default 1)")
    parser.add_argument("--save-steps", type=int, default=0, help="save a checkpoint every N steps (0: never)")
    parser.add_argument("--stop-after", type=int, default=0, help="stop after this step, as if interrupted")
    parser.add_argument("--resume-from", default=None, help="checkpoint folder to resume from")
    parser.add_argument("--layers", type=int, default=2, help="encoder layers to keep (default 2 of 6)")
    parser.add_argument("--eval-rows", type=int, default=64, help="validation reviews to evaluate on")
    parser.add_argument("--max-length", type=int, default=48, help="tokens per review (default 48)")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 on a GPU that supports it, fp16 on an older GPU, fp32 on CPUs")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: one process per GPU where there are enough GPUs, else CPU processes; "
                             "cpu: CPU processes")
    return parser


def _check_arguments(args: argparse.Namespace) -> argparse.Namespace:
    """Check the script's settings (as ``parse_args`` returns them); raise ``CourseInputError`` naming the flag."""
    folder("--output-dir", args.output_dir, must_exist=False)
    for name in ("steps", "batch_size", "grad_accum", "eval_rows"):
        positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    positive_int("--layers", number("--layers", args.layers, 1, ENCODER_LAYERS))
    positive_int("--max-length", number("--max-length", args.max_length, 1, MAX_TOKENS))
    nonnegative_int("--save-steps", args.save_steps)
    nonnegative_int("--stop-after", args.stop_after)
    number("--learning-rate", args.learning_rate, 0, 1, low_open=True)
    _seed("--seed", args.seed)
    one_of("--precision", args.precision, PRECISIONS)
    one_of("--device", args.device, DEVICES)
    if args.stop_after and not 0 < args.stop_after < args.steps:
        raise CourseInputError(f"--stop-after must lie between 1 and --steps - 1 ({args.steps - 1}), "
                               f"got {args.stop_after}")
    if args.stop_after and (not args.save_steps or args.stop_after % args.save_steps):
        raise CourseInputError("--stop-after must be a multiple of --save-steps, or the interrupted run leaves no "
                               "checkpoint")
    if args.resume_from is not None and not (folder("--resume-from", args.resume_from, must_exist=False)
                                             / "trainer_state.json").is_file():
        raise CourseInputError(f"--resume-from {str(args.resume_from)!r} is not a Trainer checkpoint folder (no "
                               "trainer_state.json)")
    get_device()  # a bad COURSE_DEVICE stops the run here, before any process loads a model
    return args


def _seed(name: str, value) -> int:
    return nonnegative_int(name, number(name, value, 0, MAX_SEED))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's settings; a bad one ends the program with status 2 and one line naming the flag."""
    parser = _parser()
    if argv is not None and (isinstance(argv, str) or not all(isinstance(a, str) for a in argv)):
        raise CourseInputError(f"argv must be a list of strings (or None for sys.argv), got {argv!r}")
    args = parser.parse_args(argv)
    try:
        return _check_arguments(args)
    except CourseInputError as error:
        parser.error(str(error))


def run_plan(processes: int, device: str = "auto", precision: str = "auto"):
    """The :class:`course_lib.precision.DevicePlan` of a run with ``processes`` processes: this machine's plan, or
    CPU processes with gloo when ``device`` is ``"cpu"`` (or ``COURSE_DEVICE=cpu``)."""
    from course_lib.precision import machine_plan, plan_devices

    one_of("device", device, DEVICES)
    one_of("precision", precision, PRECISIONS)
    if device == "cpu" or get_device().type == "cpu":
        return plan_devices(processes, 0, False, precision)
    return machine_plan(processes, precision)


def plan_options(plan) -> dict:
    """The script's ``device`` and ``precision`` options that make every run follow ``plan``: a run of one
    process compared with the plan's processes must use the same kind of device and the same precision."""
    return {"device": "auto" if plan.cuda else "cpu", "precision": plan.precision}


def build_model(layers: int, seed: int):
    """The first ``layers`` layers of the course encoder with a seeded two-class head; dropout off everywhere,
    embeddings frozen."""
    positive_int("layers", number("layers", layers, 1, ENCODER_LAYERS))  # the seed: checked by seed_everything
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from course_lib import assets
    from course_lib.data import MOVIE_LABELS

    seed_everything(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the dropped layers and the fresh head: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            assets.encoder_path(), num_hidden_layers=layers, num_labels=len(MOVIE_LABELS),
            id2label=dict(enumerate(MOVIE_LABELS)), label2id={n: i for i, n in enumerate(MOVIE_LABELS)},
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
            attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
    # the embedding table is 11.7 M of the slice's 15 M numbers: frozen, it keeps checkpoints, optimizer
    # states and the gradients that processes exchange small; the layers and the head train
    for parameter in model.base_model.embeddings.parameters():
        parameter.requires_grad_(False)
    # BERT's classifier takes **kwargs but averages its loss itself; left True, Trainer would treat the loss
    # as a sum over the global batch and multiply it by the number of processes (gradients x2 on 2 processes)
    model.accepts_loss_kwargs = False
    return model


def build_data(rows: int, eval_rows: int, max_length: int, seed: int):
    """``rows`` training reviews in a seeded order and ``eval_rows`` validation reviews, tokenized, unpadded."""
    positive_int("rows", rows)
    positive_int("eval_rows", eval_rows)
    positive_int("max_length", number("max_length", max_length, 1, MAX_TOKENS))
    _seed("seed", seed)
    from course_lib import assets
    from course_lib.data import load_movie_reviews

    tokenizer = assets.load_tokenizer()
    reviews = load_movie_reviews(profile="quick")
    if rows > len(reviews["train"]):
        raise SystemExit(f"asked for {rows} training reviews, the quick split has {len(reviews['train'])}")
    train = reviews["train"].shuffle(seed=seed).select(range(rows))  # the order every run sees
    validation = reviews["validation"].select(range(min(eval_rows, len(reviews["validation"]))))

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    options = dict(batched=True, remove_columns=["text"], load_from_cache_file=False, keep_in_memory=True)
    return tokenizer, train.map(tokenize, **options), validation.map(tokenize, **options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import datasets
    import torch
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    import course_lib  # noqa: F401  (offline mode)
    from course_lib.training import compute_metrics

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    plan = run_plan(world_size, args.device, args.precision)
    if plan.processes != world_size:  # never happens with cpu_processes_ok; refuse rather than misplace a rank
        raise SystemExit(f"the plan runs {plan.processes} processes, torchrun started {world_size}")
    cuda = plan.cuda
    global_batch = args.batch_size * args.grad_accum * world_size
    tokenizer, train, validation = build_data(args.steps * global_batch, args.eval_rows, args.max_length, args.seed)

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=32,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        weight_decay=0.01,
        warmup_steps=0.1,
        lr_scheduler_type="linear",
        train_sampling_strategy="sequential",  # the seeded order above, split across processes batch by batch
        logging_strategy="steps",
        logging_steps=1,
        eval_strategy="no",
        save_strategy="steps" if args.save_steps else "no",
        save_steps=args.save_steps or 500,
        report_to="none",
        disable_tqdm=True,
        use_cpu=not cuda,  # CPU processes never touch a GPU, even on a machine that has one
        bf16=plan.precision == "bf16",  # autocast: the weights stay float32, matmuls run in bf16
        fp16=plan.precision == "fp16",  # autocast and a gradient scaler (older GPUs)
        ddp_backend=plan.backend if world_size > 1 else None,
        ddp_find_unused_parameters=False,  # every trainable parameter takes part in each step
        dataloader_num_workers=0,
        seed=args.seed,
        data_seed=args.seed,
    )

    class StopAfter(TrainerCallback):
        """Ends training after step ``--stop-after`` (a simulated crash that happens after a checkpoint)."""

        def on_step_end(self, _args, state, control, **kwargs):
            if args.stop_after and state.global_step >= args.stop_after:
                control.should_training_stop = True
            return control

    trainer = Trainer(model=build_model(args.layers, args.seed), args=training_args, train_dataset=train,
                      data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                      compute_metrics=compute_metrics, callbacks=[StopAfter()])
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=args.resume_from)
    seconds = time.perf_counter() - start
    metrics = {} if args.stop_after else trainer.evaluate(validation)
    if not args.stop_after:
        trainer.save_model(str(Path(args.output_dir) / FINAL_DIR))  # rank 0 writes, the others wait
    if trainer.is_world_process_zero():
        record = {
            "world_size": world_size,
            "backend": training_args.ddp_backend if world_size > 1 else None,
            "device": "cuda" if cuda else "cpu",
            "devices": list(plan.devices),  # the device of each local rank
            "plan": plan.note,
            "precision": plan.precision,
            "per_device_batch": args.batch_size,
            "grad_accum": args.grad_accum,
            "global_batch": global_batch,
            "train_rows": len(train),
            "eval_rows": len(validation),
            "steps_done": trainer.state.global_step,
            "resumed_from": args.resume_from,
            "stopped_after": args.stop_after or None,
            "losses": {int(e["step"]): e["loss"] for e in trainer.state.log_history if "loss" in e},
            "grad_norms": {int(e["step"]): e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e},
            "eval": {k: v for k, v in metrics.items() if k in ("eval_loss", "eval_accuracy", "eval_f1")},
            "train_seconds": round(seconds, 2),
            "examples_per_second": None if args.resume_from else round(
                trainer.state.global_step * global_batch / seconds, 2),
            "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__,
        }
        Path(args.output_dir, RUN_LOG).write_text(json.dumps(record, indent=1))
    return 0


# ----------------------------------------------------------------------------------------------- launching
def command(output_dir: str | os.PathLike, processes: int = 1, **options) -> list[str]:
    """The command line that runs this script in ``processes`` processes (torchrun when more than one).

    ``options`` become flags: ``batch_size=8`` -> ``--batch-size 8``; they are checked as the script checks them
    (``CourseInputError`` naming the flag). ``python -m torch.distributed.run`` is what the ``torchrun`` command
    runs; calling it through this interpreter keeps the course environment.
    """
    positive_int("processes", processes)
    defaults = vars(_parser().parse_args(["--output-dir=."]))
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise CourseInputError(f"unknown option(s) {', '.join(unknown)}: the script takes "
                               f"{', '.join(sorted(set(defaults) - {'output_dir'}))}")
    given = {name: value for name, value in options.items() if value is not None}
    _check_arguments(argparse.Namespace(**{**defaults, **given, "output_dir": output_dir}))
    flags = [f"--output-dir={output_dir}", *(f"--{name.replace('_', '-')}={value}" for name, value in given.items())]
    if processes == 1:
        return [sys.executable, "-m", "course_lib.ddp_train", *flags]
    # --local-addr: the processes meet on the loopback address, without looking up this machine's host name
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1",
            f"--nproc_per_node={processes}", "-m", "course_lib.ddp_train", *flags]


def launch(output_dir: str | os.PathLike, processes: int = 1, timeout: float = 600, threads: int | None = None,
           **options) -> dict:
    """Run the script (in a fresh process, or ``processes`` under torchrun) and return its ``run.json``.

    ``threads`` sets OMP_NUM_THREADS for each process (torchrun's default with several processes is 1).
    Bad arguments raise ``CourseInputError`` before any process starts; a failing run raises ``RuntimeError``
    with the end of its output.
    """
    number("timeout", timeout, 0, low_open=True)
    if threads is not None:
        positive_int("threads", threads)
    run = command(output_dir, processes, **options)  # checks the rest
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run(run, env=env, capture_output=True, text=True, timeout=timeout)
    log = Path(output_dir) / RUN_LOG
    if done.returncode != 0 or not log.is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"the training run in {output_dir} failed (exit code {done.returncode}):\n{tail}")
    return json.loads(log.read_text())


def final_weights(output_dir: str | os.PathLike) -> dict:
    """The final weights a run saved: ``{name: tensor}``."""
    from safetensors.torch import load_file

    path = folder("output_dir", output_dir, must_exist=False) / FINAL_DIR / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no final weights at {path}: did the run finish (not stopped early)?")
    return load_file(str(path))


def max_weight_difference(run_a: str | os.PathLike, run_b: str | os.PathLike) -> float:
    """Largest ``|w_a - w_b|`` over every parameter of two runs' final weights."""
    folder("run_a", run_a, must_exist=False)
    folder("run_b", run_b, must_exist=False)
    a, b = final_weights(run_a), final_weights(run_b)
    if a.keys() != b.keys():
        raise ValueError(f"the runs saved different parameters: {sorted(a.keys() ^ b.keys())[:5]}")
    return max((a[name].float() - b[name].float()).abs().max().item() for name in a)


if __name__ == "__main__":
    sys.exit(main())
