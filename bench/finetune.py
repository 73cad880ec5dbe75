"""Time to a target accuracy (DAWNBench style): how long each fine-tuning recipe takes, from the pretrained
encoder, to reach a validation accuracy of at least ``--target`` (0.80) on the course's movie reviews.

    python bench/finetune.py [--device cuda] [--seeds 0 1 2] [--target 0.8] [--quick]

The recipes fine-tune the same pretrained encoder (all-MiniLM-L6-v2) with a fresh two-class head, on the same
training split, and are scored on the same fixed validation subset every ``EVAL_EVERY_EXAMPLES`` training
examples (the same data interval for every batch size):

* ``course``: lesson 07's model and ``TrainingArguments``: the encoder's hidden states averaged over the real
  tokens into a two-class head, batch 32, lr 1e-4, weight decay 0.01, 10% linear warm-up, each batch padded to
  its own longest review by ``DataCollatorWithPadding``, reviews of similar length grouped into one batch,
  PyTorch's fused (SDPA) attention, float32 (what every CPU computes); ``course, bfloat16``, the same with bf16
  autocast, runs beside it where the CPU or GPU computes bf16 natively;
* ``hf-default``: what a user copies from the Hugging Face course: ``Trainer`` defaults (read from
  ``TrainingArguments()`` at run time: batch 8, lr 5e-5, no weight decay, no warm-up, linear decay over 3 epochs,
  AdamW, gradient clipping at 1.0), ``DataCollatorWithPadding``, random batches, float32, SDPA attention;
* ``naive``: the original notebooks: the same optimiser and batches as ``hf-default``, but every review padded
  to 512 tokens up front (``padding="max_length"``) and eager attention (scores and weights materialised).

The clock starts before the tokenizer and the pretrained weights are loaded and includes tokenizing the training
split; it stops at the first evaluation that reaches the target. Evaluation time is **not** counted (it depends
only on how often one evaluates); it is reported separately. All recipes share one training loop that does what
``Trainer`` does per step (autocast, loss, backward, clipping, fused AdamW, scheduler), without its overhead.

Where a run to the target would take hours (the naive recipe on a CPU: each step computes 8 x 512 tokens), its
steps to the target come from the run of the recipe with the same arithmetic (``hf-default``, same seed: same
optimiser, same batches in the same order, same head initialisation). Padding to 512 and eager attention change
no logit beyond float tolerance (``tests/test_bench_smoke.py`` shows it); dropout draws its masks over a larger
tensor, so a real padded run would see other masks, an equally likely draw. Its time is then
``setup + steps x median time per step``, each measured at its real padding.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

import common
import flops
from course_lib.assets import encoder_path, load_tokenizer
from course_lib.data import load_movie_reviews
from course_lib.settings import seed_everything

TARGET_ACCURACY = 0.80
VALIDATION_ROWS = 500  # the fixed subset scored during training: the first rows of the validation split
EVAL_EVERY_EXAMPLES = 512  # 16 steps of 32, 64 steps of 8
EVAL_BATCH_SIZE = 64
MAX_EPOCHS = 1.0  # a run that has not reached the target after this many epochs stops and says so
TIMED_STEPS = 4  # steps timed (after one warm-up step) for a recipe whose time is extrapolated
NAIVE_MAX_LENGTH = 512


@dataclass(frozen=True)
class Recipe:
    """How one fine-tuning recipe trains; the model, data, validation subset and seeds are shared."""

    name: str
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_share: float  # share of the scheduled steps spent warming up linearly from 0
    schedule_epochs: float  # the linear schedule decays to 0 after this many epochs
    pad_to: int | None  # pad every review to this many tokens up front; None: pad each batch to its longest
    group_by_length: bool  # put reviews of similar length into one batch
    mixed_precision: bool  # bf16 autocast where the hardware computes bf16 natively (fp16 on an older GPU)
    attention: str  # "sdpa" (PyTorch's fused kernel) or "eager" (scores and weights materialised)
    source: str  # where the recipe comes from, in a few words
    same_arithmetic_as: str | None = None  # the recipe whose run gives this one's steps, where it is too slow
    pooling: str = "pooler"  # "pooler": [CLS] through BERT's pooler (AutoModelForSequenceClassification); "mean"
    freeze_embeddings: bool = False  # keep the token, position and type embeddings as pretrained (no update)
    layer_decay: float = 1.0  # layer-wise learning-rate decay: layer l of L trains at lr x decay^(L - l)

    def __post_init__(self):
        if self.pooling not in ("pooler", "mean"):
            raise ValueError(f"pooling must be 'pooler' or 'mean', got {self.pooling!r}")
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be 'sdpa' or 'eager', got {self.attention!r}")
        if self.batch_size < 1 or self.learning_rate <= 0 or self.schedule_epochs <= 0:
            raise ValueError(f"need batch_size >= 1, learning_rate > 0 and schedule_epochs > 0, got "
                             f"{self.batch_size}, {self.learning_rate}, {self.schedule_epochs}")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.pad_to is not None and self.pad_to < 2:
            raise ValueError(f"pad_to must be None or at least 2 tokens, got {self.pad_to}")


def course_recipe() -> Recipe:
    """The course's recipe, in float32: what every CPU computes (chosen by ``bench/recipe_search.py`` on the
    stopping set over three seeds; ``bench/results/recipe_search.md``)."""
    return Recipe("course", batch_size=32, learning_rate=1e-4, weight_decay=0.01, warmup_share=0.1,
                  schedule_epochs=1.0, pad_to=None, group_by_length=True, mixed_precision=False, attention="sdpa",
                  pooling="mean",
                  source="lesson 07's model and TrainingArguments: mean pooling over the real tokens (the pooling the "
                         "encoder was trained with), batch 32, lr 1e-4 = 5e-5 x sqrt(32/8), 10% warm-up, "
                         "length-grouped, schedule over the quick profile's 1 epoch")


def course_mixed_recipe(precision: str = "bfloat16") -> Recipe:
    """The course recipe with autocast to ``precision`` (bf16; fp16 on a GPU without bf16): run where the hardware
    computes it natively, beside the float32 column."""
    return replace(course_recipe(), name=f"course, {precision}", mixed_precision=True,
                   source="the course recipe with bf16 autocast, where the CPU or GPU computes bf16 natively")


def hf_default_recipe() -> Recipe:
    """``Trainer``'s defaults, read from ``TrainingArguments`` so that they stay what transformers ships."""
    import tempfile

    from transformers import TrainingArguments

    with tempfile.TemporaryDirectory() as folder:
        defaults = TrainingArguments(output_dir=folder, report_to="none")
    warmup = defaults.warmup_steps  # an int >= 1 is a number of steps, a float below 1 a share
    if warmup >= 1:
        raise ValueError(f"TrainingArguments' default warm-up is now {warmup} steps; update hf_default_recipe")
    return Recipe("hf-default", batch_size=defaults.per_device_train_batch_size,
                  learning_rate=defaults.learning_rate, weight_decay=defaults.weight_decay,
                  warmup_share=float(warmup), schedule_epochs=float(defaults.num_train_epochs), pad_to=None,
                  group_by_length=False, mixed_precision=defaults.bf16 or defaults.fp16, attention="sdpa",
                  source="Trainer defaults + DataCollatorWithPadding (Hugging Face course, chapter 3)")


def naive_recipe(max_length: int = NAIVE_MAX_LENGTH) -> Recipe:
    """``hf-default`` with every review padded to ``max_length`` up front and eager attention."""
    return replace(hf_default_recipe(), name="naive", pad_to=max_length, attention="eager",
                   source=f"original notebooks: padding='max_length' ({max_length}), eager attention, Trainer "
                          "defaults", same_arithmetic_as="hf-default")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without it bf16 is slower, not faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The reduced precision ``recipe`` computes its matmuls in on ``device``, or None for float32."""
    if not recipe.mixed_precision:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------- data
def encode(texts: list[str], labels: list[int], tokenizer, pad_to: int | None) -> list[dict]:
    """One feature dict per review: padded to ``pad_to`` tokens up front, or left for the collator to pad."""
    if pad_to is None:
        encoded = tokenizer(texts, truncation=True)
    else:
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=pad_to)
    return [{**{key: encoded[key][i] for key in encoded}, "labels": label} for i, label in enumerate(labels)]


def collator(tokenizer):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)  # pads to the batch's longest; a no-op on rows padded up front


def train_loader(recipe: Recipe, features: list[dict], tokenizer, seed: int) -> DataLoader:
    """Shuffled batches, length-grouped where the recipe asks (the sampler behind Trainer's group_by_length)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if recipe.group_by_length:
        lengths = [sum(feature["attention_mask"]) for feature in features]  # real tokens, padding or not
        sampler = LengthGroupedSampler(recipe.batch_size, lengths=lengths, generator=generator)
    else:
        sampler = RandomSampler(features, generator=generator)
    return DataLoader(features, batch_size=recipe.batch_size, sampler=sampler, collate_fn=collator(tokenizer))


def batches(loader: DataLoader):
    """The loader's batches, epoch after epoch (each epoch reshuffled by the sampler's generator)."""
    while True:
        yield from loader


# ----------------------------------------------------------------------------------------------- model
class MeanPooledClassifier(torch.nn.Module):
    """The encoder's last hidden states averaged over the real tokens (the pooling all-MiniLM-L6-v2 was trained
    with), dropout, then a linear two-class head; returns an object with ``.logits`` like a transformers model."""

    def __init__(self, encoder, num_labels: int = 2):
        super().__init__()
        self.encoder_model, self.config = encoder, encoder.config
        self.dropout = torch.nn.Dropout(encoder.config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)
        torch.nn.init.normal_(self.classifier.weight, std=encoder.config.initializer_range)  # as transformers does
        torch.nn.init.zeros_(self.classifier.bias)

    @property
    def base_model(self):
        return self.encoder_model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state  # (B, T, D)
        # course_lib.pooling.masked_mean, without its empty-row check: that check would wait for a GPU every step
        weights = attention_mask[..., None].to(hidden.dtype)  # (B, T, 1): 1 on real tokens
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, D)
        return SimpleNamespace(logits=self.classifier(self.dropout(pooled)))  # (B, 2)


def new_classifier(recipe: Recipe, seed: int, device: torch.device):
    """The pretrained encoder with a fresh two-class head (initialised from ``seed``), in training mode."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    seed_everything(seed)
    with common.quiet_transformers():  # its load report lists the fresh head as missing weights: expected
        if recipe.pooling == "mean":
            model = MeanPooledClassifier(AutoModel.from_pretrained(encoder_path(), add_pooling_layer=False,
                                                                   attn_implementation=recipe.attention))
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                encoder_path(), num_labels=2, attn_implementation=recipe.attention)
    return model.to(device).train()


def logits_of(model, batch: dict) -> torch.Tensor:
    """(B, 2) logits of a collated batch (its ``labels`` are left out)."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 token_type_ids=batch["token_type_ids"]).logits


@torch.no_grad()
def accuracy(model, features: list[dict], tokenizer, device: torch.device) -> float:
    """Share of ``features`` classified correctly, in float32, batches of similar length (the same for all)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    pad = collator(tokenizer)
    correct = 0
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        batch = pad([features[i] for i in order[start:start + EVAL_BATCH_SIZE]])
        batch = {key: value.to(device) for key, value in batch.items()}
        correct += (logits_of(model, batch).argmax(-1) == batch["labels"]).sum().item()
    model.train(was_training)
    return correct / len(features)


def parameter_groups(model, recipe: Recipe) -> list[dict]:
    """The optimiser's parameter groups: every trainable parameter at ``recipe.learning_rate``, or, with layer
    decay, each encoder layer at ``lr x decay^(L - l)`` (the embeddings at ``decay^(L + 1)``, the pooler and head
    at the full rate). With ``freeze_embeddings`` the embeddings get no gradient at all."""
    encoder = model.base_model
    if recipe.freeze_embeddings:
        encoder.embeddings.requires_grad_(False)
    layers = encoder.encoder.layer
    depth = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
    depth |= {id(p): 0 for p in encoder.embeddings.parameters()}
    top = len(layers) + 1  # pooler and classifier
    groups: dict[int, list] = {}
    for parameter in model.parameters():
        if parameter.requires_grad:
            groups.setdefault(depth.get(id(parameter), top), []).append(parameter)
    return [{"params": params, "lr": recipe.learning_rate * recipe.layer_decay ** (top - level)}
            for level, params in sorted(groups.items())]


class Trainee:
    """A fresh classifier with its optimiser, schedule and batches for one recipe and seed; counts its work."""

    def __init__(self, recipe: Recipe, seed: int, texts: list[str], labels: list[int], device: torch.device):
        from transformers import get_linear_schedule_with_warmup

        start = time.perf_counter()  # the clock starts before anything pretrained is loaded
        self.recipe, self.device = recipe, device
        self.tokenizer = load_tokenizer()
        self.features = encode(texts, labels, self.tokenizer, recipe.pad_to)
        self.loader = train_loader(recipe, self.features, self.tokenizer, seed)
        self.model = new_classifier(recipe, seed, device)
        self.dtype = autocast_dtype(recipe, device)
        scheduled = math.ceil(recipe.schedule_epochs * len(self.loader))
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, recipe), lr=recipe.learning_rate,
                                           weight_decay=recipe.weight_decay, fused=True)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, math.ceil(recipe.warmup_share * scheduled),
                                                         scheduled)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.stream = batches(self.loader)
        self.shapes: list[tuple[int, int]] = []  # (B, T) of every step: what the hardware computed
        self.lengths: list[int] = []  # real tokens of every training example seen
        self.examples = 0
        self.losses: list[torch.Tensor] = []
        common.synchronize(device)
        self.setup_seconds = time.perf_counter() - start

    @property
    def steps(self) -> int:
        return len(self.shapes)

    def step(self) -> None:
        """One optimiser step on the next batch."""
        batch = next(self.stream)
        self.shapes.append(tuple(batch["input_ids"].shape))
        self.lengths += batch["attention_mask"].sum(dim=1).tolist()
        self.examples += len(batch["labels"])
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            logits = logits_of(self.model, batch)  # (B, 2)
        loss = F.cross_entropy(logits.float(), batch["labels"])
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.detach())  # no .item(): that would wait for a GPU at every step

    def timed_steps(self, n: int) -> float:
        """Seconds ``n`` steps take (queued GPU work included)."""
        common.synchronize(self.device)
        start = time.perf_counter()
        for _ in range(n):
            self.step()
        common.synchronize(self.device)
        return time.perf_counter() - start

    def work(self) -> dict:
        """Tokens and model FLOPs of the steps so far: as computed (with padding) and useful (real tokens)."""
        config = self.model.config
        return {"tokens": sum(b * t for b, t in self.shapes), "real_tokens": sum(self.lengths),
                "flops": flops.training_flops(self.shapes, config),
                "useful_flops": flops.useful_training_flops(self.lengths, config)}


# ----------------------------------------------------------------------------------------------- runs
def run_to_target(recipe: Recipe, seed: int, data: dict, device: torch.device, target: float,
                  eval_every: int, max_examples: int, log=print, verbose: bool = False) -> dict:
    """Train until the validation subset's accuracy reaches ``target`` (or ``max_examples`` are seen)."""
    trainee = Trainee(recipe, seed, data["train_texts"], data["train_labels"], device)
    validation = encode(data["validation_texts"], data["validation_labels"], trainee.tokenizer, None)
    train_seconds, eval_seconds, curve, reached = 0.0, 0.0, [], False
    while trainee.examples < max_examples and not reached:
        before = trainee.examples
        while trainee.examples // eval_every == before // eval_every and trainee.examples < max_examples:
            train_seconds += trainee.timed_steps(1)
        begin = time.perf_counter()
        score = accuracy(trainee.model, validation, trainee.tokenizer, device)
        eval_seconds += time.perf_counter() - begin
        reached = score >= target
        curve.append({"examples": trainee.examples, "steps": trainee.steps, "seconds": trainee.setup_seconds +
                      train_seconds, "accuracy": score})
        if verbose:
            log(f"    {recipe.name} seed {seed}: {trainee.examples} examples, {trainee.steps} steps, "
                f"{curve[-1]['seconds']:.1f} s, accuracy {score:.3f}")
    begin = time.perf_counter()
    final = accuracy(trainee.model, data["check_features"](trainee.tokenizer), trainee.tokenizer, device)
    check_seconds = time.perf_counter() - begin
    losses = torch.stack(trainee.losses).float().cpu()
    result = {
        "recipe": recipe.name, "seed": seed, "measured": "run to the target",
        "reached": reached, "time_to_target": trainee.setup_seconds + train_seconds if reached else None,
        "steps_to_target": trainee.steps if reached else None,
        "examples_to_target": trainee.examples if reached else None,
        "setup_seconds": trainee.setup_seconds, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
        "steps": trainee.steps, "examples": trainee.examples,
        "seconds_per_step": train_seconds / trainee.steps,
        "accuracy_at_stop": curve[-1]["accuracy"], "final_accuracy": final, "check_seconds": check_seconds,
        "first_loss": float(losses[0]), "last_loss": float(losses[-max(1, len(losses) // 10):].mean()),
        "precision": precision_name(trainee.dtype), "curve": curve,
        **trainee.work(),
    }
    shown = f"{result['time_to_target']:.1f} s" if reached else f"not reached in {trainee.examples} examples"
    log(f"  seed {seed} {recipe.name:10s}: {shown}, {trainee.steps} steps, accuracy {curve[-1]['accuracy']:.3f} "
        f"(held-out validation {final:.3f}), {result['seconds_per_step'] * 1000:.0f} ms/step, "
        f"eval {eval_seconds:.1f} s not counted")
    return result


def run_by_arithmetic(recipe: Recipe, seed: int, twin: dict, data: dict, device: torch.device, steps: int,
                      log=print) -> dict:
    """A recipe too slow to run to the target: time ``steps`` of its real steps (after one warm-up step) and take
    its steps to the target from ``twin``, the run of the recipe with the same arithmetic and seed."""
    trainee = Trainee(recipe, seed, data["train_texts"], data["train_labels"], device)
    trainee.step()  # warm-up: first-call costs
    warm = trainee.work()
    per_step = [trainee.timed_steps(1) for _ in range(steps)]
    work = {key: value - warm[key] for key, value in trainee.work().items()}  # the timed steps only
    median = common.spread(per_step)["median"]
    reached = twin["reached"]
    result = {
        "recipe": recipe.name, "seed": seed, "measured": f"{steps} timed steps x steps of {twin['recipe']}",
        "reached": reached,
        "time_to_target": trainee.setup_seconds + twin["steps_to_target"] * median if reached else None,
        "steps_to_target": twin["steps_to_target"], "examples_to_target": twin["examples_to_target"],
        "setup_seconds": trainee.setup_seconds, "train_seconds": sum(per_step), "eval_seconds": 0.0,
        "steps": steps, "examples": steps * recipe.batch_size, "seconds_per_step": median,
        "step_seconds": per_step, "accuracy_at_stop": twin["accuracy_at_stop"],  # the twin's: not trained here
        "final_accuracy": twin["final_accuracy"], "accuracies_from": twin["recipe"],
        "precision": precision_name(trainee.dtype),
        "padded_length": trainee.shapes[-1][1], **work,
    }
    shown = f"{result['time_to_target']:.0f} s (estimated)" if reached else "not reached"
    log(f"  seed {seed} {recipe.name:10s}: {shown}: {result['setup_seconds']:.1f} s setup + "
        f"{twin['steps_to_target']} steps x {median:.2f} s/step at {result['padded_length']} tokens")
    return result


def measure_throughput(recipe: Recipe, data: dict, device: torch.device, dtypes, steps: int, peaks: dict,
                       log=print) -> dict:
    """Model FLOP utilisation of ``recipe``: the same ``steps`` batches (seed 0, after two warm-up steps) in each
    precision; achieved model FLOP/s over the measured peak matmul FLOP/s of that precision."""
    out = {}
    for name in dtypes:
        trainee = Trainee(replace(recipe, mixed_precision=name != "float32"), 0, data["train_texts"],
                          data["train_labels"], device)
        assert precision_name(trainee.dtype) == name, (trainee.dtype, name)
        trainee.timed_steps(2)
        warm = trainee.work()
        seconds = trainee.timed_steps(steps)
        work = {key: value - warm[key] for key, value in trainee.work().items()}
        peak = peaks[name]["flops_per_second"]
        out[name] = {"steps": steps, "seconds": seconds, **work,
                     "flops_per_second": work["flops"] / seconds,
                     "useful_flops_per_second": work["useful_flops"] / seconds,
                     "peak_flops_per_second": peak, "mfu": work["flops"] / seconds / peak,
                     "useful_mfu": work["useful_flops"] / seconds / peak,
                     "tokens_per_second": work["tokens"] / seconds}
        log(f"  {recipe.name} {name:8s}: {work['flops'] / seconds / 1e9:6.1f} GFLOP/s of a {peak / 1e9:.1f} GFLOP/s "
            f"matmul peak: MFU {out[name]['mfu']:.1%} ({out[name]['useful_mfu']:.1%} counting real tokens only)")
    return out


def summarize(runs: list[dict], recipes: list[Recipe]) -> dict:
    """Per recipe: time and steps to the target over the seeds; the course's speed-ups where every run reached."""
    out = {}
    for recipe in recipes:
        mine = [run for run in runs if run["recipe"] == recipe.name]
        reached = all(run["reached"] for run in mine)
        out[recipe.name] = {
            "all_reached": reached,
            "time_to_target": common.spread([run["time_to_target"] for run in mine]) if reached else None,
            "steps_to_target": common.spread([run["steps_to_target"] for run in mine]) if reached else None,
            "seconds_per_step": common.spread([run["seconds_per_step"] for run in mine]),
            "final_accuracy": common.spread([run["final_accuracy"] for run in mine]),
        }

    def speedups_of(reference: str) -> dict:
        """Each other (non-course) recipe's median time over ``reference``'s, where both reached on every seed."""
        mine = out[reference]
        speedups = {}
        for recipe in recipes:
            if recipe.name.startswith("course"):
                continue
            other = out[recipe.name]
            valid = mine["all_reached"] and other["all_reached"]
            per_seed = [o["time_to_target"] / c["time_to_target"] for c, o in
                        zip((r for r in runs if r["recipe"] == reference),
                            (r for r in runs if r["recipe"] == recipe.name))] if valid else []
            speedups[recipe.name] = {
                "valid": valid,  # a speed claim holds only where both recipes reached the target on every seed
                "median_time_ratio": other["time_to_target"]["median"] / mine["time_to_target"]["median"]
                if valid else None,
                "per_seed": common.spread(per_seed) if valid else None,
            }
        return speedups

    out["speedup_of_course_over"] = speedups_of("course")  # the float32 column: every CPU
    mixed = [recipe.name for recipe in recipes if recipe.name.startswith("course, ")]
    if mixed:  # the reduced-precision column, where the hardware computes it natively
        out["course_mixed"] = mixed[0]
        out["speedup_of_course_mixed_over"] = speedups_of(mixed[0])
    return out


def load_data(quick: bool) -> dict:
    """Training texts and labels, the fixed validation subset that decides when to stop, and the rest of the
    validation split, held out for a final check of the stopped model."""
    data = load_movie_reviews(profile="full")
    train, validation = data["train"], data["validation"]
    if quick:
        train = train.select(range(96))
    rows = 32 if quick else VALIDATION_ROWS
    check = validation.select(range(rows, 96 if quick else len(validation)))  # not used for stopping
    cache = {}

    def check_features(tokenizer):
        if "features" not in cache:
            cache["features"] = encode(list(check["text"]), list(check["label"]), tokenizer, None)
        return cache["features"]

    return {"train_texts": list(train["text"]), "train_labels": list(train["label"]),
            "validation_texts": list(validation["text"][:rows]), "validation_labels": list(validation["label"][:rows]),
            "check_features": check_features, "check_rows": len(check), "train_rows": len(train)}


def warm_up(recipes: list[Recipe], data: dict, device: torch.device) -> None:
    """A few steps of each recipe, not recorded: one-time costs (kernels, allocator, library start-up) are then
    charged to nobody, rather than to whichever recipe runs first."""
    for recipe in recipes:
        small = replace(recipe, pad_to=min(recipe.pad_to, 64)) if recipe.pad_to else recipe
        trainee = Trainee(small, 0, data["train_texts"][:64], data["train_labels"][:64], device)
        trainee.timed_steps(2)
        accuracy(trainee.model, encode(data["validation_texts"][:16], data["validation_labels"][:16],
                                       trainee.tokenizer, None), trainee.tokenizer, device)


def run(device: torch.device, quick: bool = False, seeds: tuple[int, ...] = (0, 1, 2),
        target: float = TARGET_ACCURACY, naive_max_length: int | None = None, extrapolate: bool | None = None,
        log=print) -> dict:
    """Every recipe for every seed (alternating, so that drift in a shared machine hits all alike), then MFU."""
    if not 0 < target <= 1:
        raise ValueError(f"--target must be an accuracy in (0, 1], got {target}")
    if not seeds:
        raise ValueError("need at least one seed")
    data = load_data(quick)
    eval_every = 32 if quick else EVAL_EVERY_EXAMPLES
    max_examples = 64 if quick else math.ceil(MAX_EPOCHS * data["train_rows"])
    recipes = [course_recipe(), hf_default_recipe(), naive_recipe(naive_max_length or (64 if quick else
                                                                                        NAIVE_MAX_LENGTH))]
    mixed = autocast_dtype(course_mixed_recipe(), device)  # None on a CPU without native bf16
    if mixed is not None:
        recipes.insert(1, course_mixed_recipe(precision_name(mixed)))
    if extrapolate is None:  # a GPU runs the naive recipe to the target; a CPU would take hours
        extrapolate = device.type == "cpu"
    timed_steps = 1 if quick else TIMED_STEPS
    warm_up(recipes, data, device)

    runs = []
    for seed in seeds:
        by_name = {}
        for recipe in recipes:
            if extrapolate and recipe.same_arithmetic_as:
                result = run_by_arithmetic(recipe, seed, by_name[recipe.same_arithmetic_as], data, device,
                                           timed_steps, log)
            else:
                result = run_to_target(recipe, seed, data, device, target, eval_every, max_examples, log)
            by_name[recipe.name] = result
            runs.append(result)

    course = recipes[0]
    dtypes = ["float32"] + (["bfloat16"] if mixed == torch.bfloat16 else [])
    peaks = flops.measure_peaks(device, dtypes, quick)
    log("  peak matmul: " + ", ".join(f"{name} {p['flops_per_second'] / 1e9:.1f} GFLOP/s (n={p['size']})"
                                      for name, p in peaks["peaks"].items()))
    mfu = measure_throughput(course, data, device, dtypes, 4 if quick else 24, peaks["peaks"], log)
    for run_ in runs:  # the runs' own MFU, in the precision they trained in
        if run_["precision"] in peaks["peaks"] and run_["train_seconds"] > 0:
            run_["mfu"] = run_["flops"] / run_["train_seconds"] / peaks["peaks"][run_["precision"]]["flops_per_second"]
    return {
        "setup": {"target": target, "validation_rows": len(data["validation_texts"]),
                  "check_rows": data["check_rows"], "train_rows": data["train_rows"], "eval_every_examples": eval_every,
                  "max_examples": max_examples, "seeds": list(seeds), "extrapolated": extrapolate,
                  "timed_steps": timed_steps, "eval_time_counted": False},
        "recipes": [asdict(recipe) | {"precision": precision_name(autocast_dtype(recipe, device))}
                    for recipe in recipes],
        "runs": runs,
        "summary": summarize(runs, recipes),
        "peaks": peaks,
        "mfu": mfu,
    }


def report(result: dict) -> str:
    """A short text summary of :func:`run`'s result."""
    s, setup = result["summary"], result["setup"]
    lines = [f"target {setup['target']:.2f} on {setup['validation_rows']} validation reviews, evaluated every "
             f"{setup['eval_every_examples']} examples (evaluation not counted), seeds {setup['seeds']}"]
    for recipe in result["recipes"]:
        r = s[recipe["name"]]
        time_text = (f"{r['time_to_target']['median']:.1f} s (min {r['time_to_target']['min']:.1f}, max "
                     f"{r['time_to_target']['max']:.1f}), {r['steps_to_target']['median']:.0f} steps"
                     if r["all_reached"] else "target not reached on every seed")
        lines.append(f"  {recipe['name']:10s}: {time_text}; final accuracy {r['final_accuracy']['mean']:.3f}")
    for name, speed in s["speedup_of_course_over"].items():
        lines.append(f"  course vs {name}: " + (f"{speed['median_time_ratio']:.1f}x faster to the target"
                                                 if speed["valid"] else "no claim: not every run reached the target"))
    for name, m in result["mfu"].items():
        lines.append(f"  MFU course {name}: {m['mfu']:.1%}")
    return "\n".join(lines)


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--target", type=float, default=TARGET_ACCURACY)
    parser.add_argument("--naive-max-length", type=int, default=None)
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    print("machine:", common.describe_machine(common.machine_info(device)))
    print(report(run(device, args.quick, tuple(args.seeds), args.target, args.naive_max_length)))


if __name__ == "__main__":
    main()
