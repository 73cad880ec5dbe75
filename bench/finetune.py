"""Fine-tuning throughput: the course recipe against a widely shared naive one, same model, data and budget.

    python bench/finetune.py [--device cuda] [--train-examples N] [--seeds 0 1 2] [--quick]

Both recipes fine-tune the course encoder (MiniLM weights) with a classification head on the course's movie
reviews, with the same optimiser, schedule, examples, epochs and seeds. They differ only in how the batches
are built and computed, and in the learning rate that goes with the batch size:

* naive: every example padded to ``--naive-max-length`` tokens up front (default 512, the tokenizer's
  model maximum, which is what ``padding="max_length"`` gives), batches of 8 in random order, float32,
  eager attention (scores and weights materialised);
* course: each batch padded to its own longest example by a data collator, examples of similar length
  grouped into the same batch, batches of 32, mixed precision (bf16, else fp16) on a GPU, PyTorch's fused
  attention kernel; the learning rate scaled with the batch (``--lr`` x 32 / 8, the linear scaling rule), since
  four times larger batches take four times fewer steps through the same epoch.

Training samples per second come from the training loop only; both recipes are then scored the same way
on the validation split (padding cannot change a masked model's predictions, so one evaluation serves both).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass

import course_lib  # noqa: F401  (offline mode before transformers is imported)
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, RandomSampler

import common
from course_lib.assets import load_tokenizer
from course_lib.data import load_movie_reviews
from course_lib.encoder import SequenceClassifier, load_pretrained_encoder, masked_mean
from course_lib.settings import seed_everything

LEARNING_RATE = 5e-5  # the naive recipe's; the course recipe scales it with its batch size
# On a CPU the naive recipe trains about one example per second (every example is 512 tokens): 160 examples
# x 3 seeds keep the whole benchmark under 15 minutes on 2 cores. A GPU trains on the whole split.
CPU_TRAIN_EXAMPLES = 160
WEIGHT_DECAY = 0.01
WARMUP_SHARE = 0.1
MAX_GRAD_NORM = 1.0
EVAL_BATCH_SIZE = 64
POOLING = "mean"  # MiniLM was trained for mean pooling; its pooler was never tuned for it


@dataclass(frozen=True)
class Recipe:
    """How batches are built and computed; everything else (model, data, optimiser, seed) is shared."""

    name: str
    batch_size: int
    max_length: int | None  # pad every example to this many tokens up front; None: pad each batch to its longest
    group_by_length: bool  # put examples of similar length into the same batch
    mixed_precision: bool  # autocast to bf16 (fp16 where the GPU lacks bf16); the CPU always runs float32
    attention: str  # "sdpa": PyTorch's fused kernel; "eager": scores and weights materialised, as written
    lr_scale: float = 1.0  # learning rate = base learning rate x lr_scale

    def __post_init__(self):
        if self.attention not in ("sdpa", "eager"):
            raise ValueError(f"attention must be 'sdpa' or 'eager', got {self.attention!r}")
        if self.batch_size < 1 or (self.max_length is not None and self.max_length < 2):
            raise ValueError(f"need batch_size >= 1 and max_length >= 2 (or None), got {self.batch_size}, "
                             f"{self.max_length}")


def naive_recipe(max_length: int = 512) -> Recipe:
    return Recipe("naive", batch_size=8, max_length=max_length, group_by_length=False, mixed_precision=False,
                  attention="eager")


def course_recipe() -> Recipe:
    return Recipe("course", batch_size=32, max_length=None, group_by_length=True, mixed_precision=True,
                  attention="sdpa", lr_scale=32 / 8)  # the linear scaling rule from the naive batch of 8


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX); without it bf16 is slower, not faster."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The reduced precision this recipe computes in on ``device``, or None for float32."""
    if not recipe.mixed_precision:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


# ----------------------------------------------------------------------------------------------- data
def encode(texts: list[str], labels: list[int], tokenizer, max_length: int | None) -> list[dict]:
    """One feature dict per example; padded to ``max_length`` up front, or left unpadded for a collator."""
    if max_length is None:
        encoded = tokenizer(texts, truncation=True)
    else:
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length)
    return [{**{key: encoded[key][i] for key in encoded}, "labels": label} for i, label in enumerate(labels)]


def train_loader(recipe: Recipe, features: list[dict], tokenizer, seed: int) -> DataLoader:
    """Shuffled batches (length-grouped for the course recipe), padded by ``DataCollatorWithPadding``."""
    from transformers import DataCollatorWithPadding
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    if recipe.group_by_length:  # the sampler behind TrainingArguments(group_by_length=True)
        lengths = [len(feature["input_ids"]) for feature in features]
        sampler = LengthGroupedSampler(recipe.batch_size, lengths=lengths, generator=generator)
    else:
        sampler = RandomSampler(features, generator=generator)
    collator = DataCollatorWithPadding(tokenizer)  # a no-op for examples already padded to one length
    return DataLoader(features, batch_size=recipe.batch_size, sampler=sampler, collate_fn=collator)


# ----------------------------------------------------------------------------------------------- model
def new_classifier(seed: int, device: torch.device) -> SequenceClassifier:
    """The course encoder with MiniLM's weights and a fresh two-class head, seeded."""
    seed_everything(seed)
    encoder, config = load_pretrained_encoder()
    return SequenceClassifier(config, num_labels=2, pooling=POOLING, encoder=encoder).to(device)


def classify(model: SequenceClassifier, batch: dict, attention: str) -> torch.Tensor:
    """(B, 2) logits, with the fused attention kernel ("sdpa") or the materialised weights ("eager")."""
    inputs = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # each (B, T)
    if attention == "sdpa":
        return model(*inputs)
    # Asking for the attention weights routes every layer through the written-out softmax(QK^T/sqrt(d))V;
    # the head is then applied as SequenceClassifier.forward applies it.
    out = model.encoder(*inputs, output_attentions=True)
    if model.pooling == "pooler":
        pooled = out.pooler_output  # (B, D)
    elif model.pooling == "cls":
        pooled = out.last_hidden_state[:, 0]  # (B, D)
    else:
        pooled = masked_mean(out.last_hidden_state, batch["attention_mask"])  # (B, D)
    return model.classifier(model.dropout(pooled))  # (B, 2)


@torch.no_grad()
def evaluate(model: SequenceClassifier, features: list[dict], tokenizer, device: torch.device) -> dict:
    """Validation accuracy and mean loss, in float32 with batches of similar length (the same for every recipe)."""
    from transformers import DataCollatorWithPadding

    model.eval()
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    collator = DataCollatorWithPadding(tokenizer)
    correct, loss_sum = 0, 0.0
    for start in range(0, len(order), EVAL_BATCH_SIZE):
        batch = collator([features[i] for i in order[start:start + EVAL_BATCH_SIZE]])
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = classify(model, batch, "sdpa").float()  # (B, 2)
        loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        correct += (logits.argmax(-1) == batch["labels"]).sum().item()
    model.train()
    return {"accuracy": correct / len(features), "loss": loss_sum / len(features)}


# ----------------------------------------------------------------------------------------------- training
def train_once(recipe: Recipe, seed: int, texts: list[str], labels: list[int], validation: list[dict],
               tokenizer, device: torch.device, epochs: int = 1, learning_rate: float = LEARNING_RATE) -> dict:
    """Fine-tune a fresh classifier with ``recipe``; return its throughput, losses and validation accuracy."""
    from transformers import get_linear_schedule_with_warmup

    model = new_classifier(seed, device).train()
    initial = [parameter.detach().clone() for parameter in model.parameters()]
    dtype = autocast_dtype(recipe, device)
    start_wall = time.perf_counter()
    features = encode(texts, labels, tokenizer, recipe.max_length)  # the naive recipe pads here, up front
    loader = train_loader(recipe, features, tokenizer, seed)
    tokenize_seconds = time.perf_counter() - start_wall

    steps = epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate * recipe.lr_scale, weight_decay=WEIGHT_DECAY)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(WARMUP_SHARE * steps), steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
    losses, tokens, real_tokens = [], 0, 0
    common.synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            tokens += batch["input_ids"].numel()
            real_tokens += int(batch["attention_mask"].sum())
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = classify(model, batch, recipe.attention)  # (B, 2)
            loss = F.cross_entropy(logits.float(), batch["labels"])
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())  # no .item() here: that would wait for the GPU at every step
    common.synchronize(device)
    train_seconds = time.perf_counter() - start
    wall_seconds = time.perf_counter() - start_wall

    losses = torch.stack(losses).float().cpu()
    moved = torch.stack([(p.detach() - q).float().norm() for p, q in zip(model.parameters(), initial)]).norm()
    tail = losses[-max(1, len(losses) // 5):]  # the last fifth of the steps
    examples = epochs * len(features)
    return {
        "recipe": recipe.name,
        "seed": seed,
        "examples": examples,
        "steps": steps,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,  # tokenizing + training
        "tokenize_seconds": tokenize_seconds,
        "samples_per_second": examples / train_seconds,
        "tokens": tokens,
        "padding_share": 1 - real_tokens / tokens,
        "first_loss": float(losses[0]),
        "final_loss": float(tail.mean()),
        "mean_loss": float(losses.mean()),
        "weight_change": float(moved),  # L2 distance the parameters travelled: > 0 when training happened
        "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
        "validation": evaluate(model, validation, tokenizer, device),
    }


def summarize(runs: list[dict], recipes: list[Recipe]) -> dict:
    """Per recipe: throughput and accuracy over the seeds; then the course's speed-up over the naive recipe."""
    out = {}
    for recipe in recipes:
        mine = [run for run in runs if run["recipe"] == recipe.name]
        out[recipe.name] = {
            "samples_per_second": common.spread([run["samples_per_second"] for run in mine]),
            "train_seconds": common.spread([run["train_seconds"] for run in mine]),
            "wall_seconds": common.spread([run["wall_seconds"] for run in mine]),
            "accuracy": common.spread([run["validation"]["accuracy"] for run in mine]),
            "final_loss": common.spread([run["final_loss"] for run in mine]),
            "padding_share": common.spread([run["padding_share"] for run in mine]),
        }
    naive, course = (out[name] for name in ("naive", "course"))
    per_seed = [c["samples_per_second"] / n["samples_per_second"]
                for n, c in zip((r for r in runs if r["recipe"] == "naive"), (r for r in runs if r["recipe"] == "course"))]
    out["speedup"] = {
        "samples_per_second_ratio": course["samples_per_second"]["median"] / naive["samples_per_second"]["median"],
        "per_seed": common.spread(per_seed),
        "wall_time_ratio": naive["wall_seconds"]["median"] / course["wall_seconds"]["median"],
        "accuracy_difference": course["accuracy"]["mean"] - naive["accuracy"]["mean"],
    }
    return out


def run(device: torch.device, quick: bool = False, train_examples: int | None = None, epochs: int = 1,
        seeds: tuple[int, ...] = (0, 1, 2), naive_max_length: int | None = None,
        learning_rate: float = LEARNING_RATE, log=print) -> dict:
    """Train both recipes side by side for every seed (alternating, so machine drift hits both alike)."""
    profile = "full" if device.type == "cuda" and not quick else "quick"
    data = load_movie_reviews(profile=profile)
    if quick:
        train_examples, seeds, naive_max_length = train_examples or 64, seeds[:1], naive_max_length or 64
    if train_examples is None:
        train_examples = len(data["train"]) if device.type == "cuda" else CPU_TRAIN_EXAMPLES
    if not 1 <= train_examples <= len(data["train"]):
        raise ValueError(f"--train-examples must lie in [1, {len(data['train'])}] for the {profile} profile, "
                         f"got {train_examples}")
    tokenizer = load_tokenizer()
    recipes = [naive_recipe(naive_max_length or tokenizer.model_max_length), course_recipe()]
    train = data["train"].shuffle(seed=0).select(range(train_examples))
    texts, labels = list(train["text"]), list(train["label"])
    val = data["validation"].select(range(16)) if quick else data["validation"]
    validation = encode(list(val["text"]), list(val["label"]), tokenizer, None)

    # Warm-up (not recorded): a few steps of each recipe, so that one-time costs (allocator, kernels,
    # library initialisation) are not charged to whichever recipe happens to run first.
    for recipe in recipes:
        train_once(recipe, 0, texts[:2 * recipe.batch_size], labels[:2 * recipe.batch_size], validation[:8],
                   tokenizer, device)

    runs = []
    for seed in seeds:
        for recipe in recipes:
            result = train_once(recipe, seed, texts, labels, validation, tokenizer, device, epochs, learning_rate)
            runs.append(result)
            log(f"  seed {seed} {recipe.name:6s}: {result['samples_per_second']:8.1f} samples/s, "
                f"{result['train_seconds']:7.1f} s training, loss {result['first_loss']:.3f} -> "
                f"{result['final_loss']:.3f}, validation accuracy {result['validation']['accuracy']:.4f}")
    return {
        "budget": {"train_examples": train_examples, "epochs": epochs, "seeds": list(seeds),
                   "validation_examples": len(validation), "profile": profile, "learning_rate": learning_rate,
                   "weight_decay": WEIGHT_DECAY, "warmup_share": WARMUP_SHARE, "max_grad_norm": MAX_GRAD_NORM},
        "recipes": [asdict(recipe) | {"precision": str(autocast_dtype(recipe, device) or "torch.float32")
                                      .removeprefix("torch.")} for recipe in recipes],
        "runs": runs,
        "summary": summarize(runs, recipes),
    }


def report(result: dict) -> str:
    """A short text summary of :func:`run`'s result."""
    s, budget = result["summary"], result["budget"]
    lines = [f"{budget['train_examples']} training examples x {budget['epochs']} epoch(s), seeds {budget['seeds']}, "
             f"{budget['validation_examples']} validation examples"]
    for name in ("naive", "course"):
        r = s[name]
        lines.append(f"  {name:6s}: {r['samples_per_second']['median']:8.1f} samples/s "
                     f"(min {r['samples_per_second']['min']:.1f}, max {r['samples_per_second']['max']:.1f}), "
                     f"training {r['train_seconds']['median']:.1f} s, padding {r['padding_share']['median']:.0%}, "
                     f"accuracy {r['accuracy']['mean']:.4f} +- {r['accuracy']['stdev']:.4f} "
                     f"(min {r['accuracy']['min']:.4f}, max {r['accuracy']['max']:.4f})")
    speed = s["speedup"]
    lines.append(f"  course / naive: {speed['samples_per_second_ratio']:.1f}x samples/s "
                 f"(per seed {speed['per_seed']['min']:.1f}x to {speed['per_seed']['max']:.1f}x), "
                 f"accuracy difference {speed['accuracy_difference']:+.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = common.add_common_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--train-examples", type=int, default=None,
                        help=f"training examples per run (default: {CPU_TRAIN_EXAMPLES} on the CPU, the whole split on a GPU)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--naive-max-length", type=int, default=None,
                        help="tokens the naive recipe pads every example to (default: the tokenizer's maximum, 512)")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE,
                        help="the naive recipe's learning rate; the course recipe uses it x 32 / 8")
    args = parser.parse_args()
    device = common.setup(args.device, args.threads)
    print("machine:", common.describe_machine(common.machine_info(device)))
    result = run(device, args.quick, args.train_examples, args.epochs, tuple(args.seeds), args.naive_max_length,
                 args.lr)
    print(report(result))


if __name__ == "__main__":
    main()
