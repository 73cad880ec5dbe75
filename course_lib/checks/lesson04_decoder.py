"""Exercises of lesson 04 (masking and decoders), the core and the stretch: one step of the training loop
(``04.train_step``), the sampling loop (``04.sample``), and the mask and positions of a left-padded decoder batch
(``04.decoder_batch``). The warm-ups are in :mod:`course_lib.checks.lesson04`.

The checks run a tiny GPT (13 tokens, 8 positions, seeded weights) for a few steps: the training step inside the
lesson's loop (AdamW, warm-up and cosine decay) against :func:`course_lib.training.train_step`, comparing every
loss, every gradient norm and the final weights; the sampling loop against :func:`course_lib.generation.generate`
with a generator of the same seed, comparing every token; the batch against :func:`course_lib.attention.decoder_mask`
and :func:`course_lib.decoder.position_ids`."""
from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.attention import causal_mask, decoder_mask
from course_lib.checks import Case, Exercise, Mistake, register
from course_lib.decoder import position_ids as default_positions
from course_lib.generation import generate
from course_lib.gpt import GPT, GPTConfig
from course_lib.training import train_step, warmup_cosine


# ----------------------------------------------------------------------------------------------- a tiny GPT
class LogitsOnly(nn.Module):
    """course_lib's GPT seen as the lesson's models are: ``model(input_ids)`` returns the logits (B, T, V)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.gpt(input_ids)[0]  # (B, T, V)


TINY = GPTConfig(vocab_size=13, context_length=8, dim=16, num_layers=2, num_heads=2)


def _tiny_model(seed: int) -> LogitsOnly:
    """A small GPT with seeded random weights, made without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gpt = GPT(TINY)
        with torch.no_grad():  # larger weights than GPT's start: distinct logits, so that each mistake shows
            for matrix in (p for p in gpt.parameters() if p.dim() >= 2):
                matrix.normal_(std=0.3)
        return LogitsOnly(gpt).eval()


def _token_ids(seed: int, *shape: int) -> Tensor:
    return torch.randint(TINY.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- 04.train_step
def _run_steps(train_step):
    """The lesson's loop around a ``train_step``: AdamW, warm-up + cosine, one step per batch of windows."""
    def run(model, batches, lr, warmup, max_norm):
        model = copy.deepcopy(model)  # training changes the weights: those of the case stay as they are
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                      lr=lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, len(batches)))
        losses, norms = [], []
        for windows in batches:  # (B, T + 1) each
            loss, norm = train_step(model, windows, optimizer, scheduler, max_norm)
            losses.append(float(loss.detach() if isinstance(loss, Tensor) else loss))  # a float or a 0-d tensor
            norms.append(float(norm.detach() if isinstance(norm, Tensor) else norm))
        weights = {name: p.detach().clone() for name, p in model.gpt.named_parameters()}
        return {"loss": losses, "gradient norm": norms, "weights": weights}
    return run


def _compare_training(got, expected) -> str | None:
    """Step by step: the loss, then the gradient norm; then every weight after the last step."""
    for key in ("loss", "gradient norm"):
        for step, (g, e) in enumerate(zip(got[key], expected[key]), 1):
            if not math.isclose(g, e, rel_tol=1e-4, abs_tol=1e-5):
                return f"the {key} of step {step}: expected {e:.6g}, got {g:.6g}"
    for name, e in expected["weights"].items():
        difference = (got["weights"][name] - e).abs().max().item()
        if difference > 1e-5:
            return (f"the losses and gradient norms match, but after {len(expected['loss'])} steps the weight "
                    f"{name} differs from the reference by up to {difference:.3g}")
    return None


def _cross_entropy(model, inputs, targets):
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _targets_not_shifted(model, windows, optimizer, scheduler, max_norm):
    loss = _cross_entropy(model, windows[:, :-1], windows[:, :-1])
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return loss.item(), norm.item()


def _no_zero_grad(model, windows, optimizer, scheduler, max_norm):
    loss = _cross_entropy(model, windows[:, :-1], windows[:, 1:])
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return loss.item(), norm.item()


def _clip_before_backward(model, windows, optimizer, scheduler, max_norm):
    loss = _cross_entropy(model, windows[:, :-1], windows[:, 1:])
    optimizer.zero_grad()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item(), norm.item()


def _scheduler_first(model, windows, optimizer, scheduler, max_norm):
    loss = _cross_entropy(model, windows[:, :-1], windows[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    with warnings.catch_warnings():  # PyTorch warns about this order, rightly
        warnings.simplefilter("ignore")
        scheduler.step()
    optimizer.step()
    return loss.item(), norm.item()


def _norm_after_clipping(model, windows, optimizer, scheduler, max_norm):
    loss = _cross_entropy(model, windows[:, :-1], windows[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    optimizer.step()
    scheduler.step()
    return loss.item(), norm.item()


def _training_cases() -> list[Case]:
    return [
        Case((_tiny_model(0), _token_ids(40, 4, 3, 7), 1e-2, 2, 0.5),
             label="4 steps of 3 windows of 7 tokens (6 predictions each), lr 1e-2, warm-up 2, clip at 0.5"),
        Case((_tiny_model(1), _token_ids(41, 3, 2, 9), 3e-3, 1, 100.0),
             label="3 steps of 2 windows of 9 tokens, clip at 100 (never acts)"),
        Case((_tiny_model(2), _token_ids(42, 5, 1, 5), 2e-2, 3, 0.05),
             label="5 steps of a single window of 5 tokens, clip at 0.05 (acts every step)"),
    ]


register(Exercise("04.train_step", "one step of the training loop", train_step, cases=_training_cases,
    adapt=_run_steps, compare=_compare_training, level="core", minutes=20,
    hints=("A window of T + 1 tokens gives T predictions: the inputs are all tokens but the last, the targets all "
           "but the first. Then the fixed order: zero the old gradients, backward, clip (keep the norm it "
           "returns), optimizer.step(), scheduler.step().",
           "loss = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T)), and after loss.backward(): "
           "grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm); return loss.item(), "
           "grad_norm.item()"),
    mistakes=[
        Mistake(_targets_not_shifted,
                "the targets are the windows shifted by one, windows[:, 1:]: with windows[:, :-1] the model learns "
                "to copy its input, and the loss falls towards 0 without learning anything about the next token."),
        Mistake(_no_zero_grad,
                "call optimizer.zero_grad() before loss.backward(): backward *adds* to .grad, so without it every "
                "step also applies the gradients of all the earlier batches."),
        Mistake(_clip_before_backward,
                "clip after loss.backward(): before it the gradients are still those of the last step (or None), so "
                "clip_grad_norm_ measures and clips nothing (it returned 0 here) and the new gradients go unclipped."),
        Mistake(_scheduler_first,
                "step the optimizer first, then the scheduler: scheduler.step() sets the learning rate of the *next* "
                "step, so calling it first skips the first warm-up rate and every step uses the rate of the one "
                "after it."),
        Mistake(_norm_after_clipping,
                "return the norm that clip_grad_norm_ returns: it is measured *before* clipping, which is what the "
                "log needs (after clipping it is never above max_norm, so the log could not show when clipping "
                "acted)."),
    ],
))


# ----------------------------------------------------------------------------------------------- 04.sample
def _with_generator(sample):
    """The student's form takes a torch.Generator; each run gets a fresh one with the case's seed."""
    def run(model, ids, max_new_tokens, block_size, temperature, top_k, seed):
        return sample(model, ids, max_new_tokens, block_size, temperature, top_k, torch.Generator().manual_seed(seed))
    return run


def _reference_sample(model, ids, max_new_tokens, block_size, temperature, top_k, generator):
    """course_lib.generation.generate, re-reading the last ``block_size`` tokens at every step (no cache)."""
    assert block_size == model.gpt.config.context_length, "the cases crop to the model's context"
    return generate(model.gpt, ids, max_new_tokens, strategy="sample", temperature=temperature, top_k=top_k,
                    generator=generator, use_cache=False)


def _sampler(crop=lambda ids, n: ids[:, -n:], position=-1, probabilities=None, keep=None, pick=None):
    """The sampling loop with one step replaceable: how to crop, which position, the distribution, the draw."""
    def sample(model, ids, max_new_tokens, block_size, temperature, top_k, generator):
        with torch.no_grad():
            for _ in range(max_new_tokens):
                logits = model(crop(ids, block_size))[:, position, :]  # (B, V)
                if probabilities is not None:
                    probs = probabilities(logits, temperature, top_k)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = (keep or (lambda x, k: torch.topk(x, min(k, x.shape[-1])).values[:, -1:]))(logits, top_k)
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = torch.softmax(logits, dim=-1)
                token = pick(probs) if pick else torch.multinomial(probs, num_samples=1, generator=generator)
                ids = torch.cat([ids, token], dim=1)  # (B, T + 1)
        return ids
    return sample


def _after_softmax(logits, temperature, top_k):
    probs = torch.softmax(logits, dim=-1) / temperature  # multinomial renormalises: the temperature does nothing
    if top_k is not None:
        kth = torch.topk(probs, min(top_k, probs.shape[-1])).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    return probs


def _kth_plus_one(logits, k):
    return torch.sort(logits, dim=-1, descending=True).values[:, min(k, logits.shape[-1] - 1):][:, :1]


def _kth_smallest(logits, k):
    return torch.topk(logits, min(k, logits.shape[-1]), largest=False).values[:, -1:]


def _sampling_cases() -> list[Case]:
    return [
        Case((_tiny_model(3), _token_ids(50, 2, 3), 10, 8, 1.0, None, 0),
             label="2 prompts of 3 tokens, 10 new tokens (past the block of 8), temperature 1, no top-k"),
        Case((_tiny_model(4), _token_ids(51, 3, 4), 6, 8, 0.7, 4, 1), label="3 prompts, temperature 0.7, top-k 4"),
        Case((_tiny_model(5), _token_ids(52, 1, 8), 5, 8, 1.5, 3, 2),
             label="one prompt that fills the block of 8, temperature 1.5, top-k 3"),
        Case((_tiny_model(6), _token_ids(53, 2, 2), 12, 8, 2.0, 20, 3),
             label="top-k 20, more than the 13 tokens of the vocabulary: every token stays"),
    ]


register(Exercise("04.sample", "the sampling loop", _reference_sample, cases=_sampling_cases, adapt=_with_generator,
    level="core", minutes=15,
    hints=("Repeat max_new_tokens times: crop to the last block_size tokens, run the model, keep the logits of the "
           "LAST position, divide by the temperature, set all but the top k to -inf, softmax, draw one token per "
           "row with torch.multinomial and the generator, append it.",
           "logits = model(ids[:, -block_size:])[:, -1, :] / temperature; after the top-k filter: "
           "next_id = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1, generator=generator); "
           "ids = torch.cat([ids, next_id], dim=1)"),
    mistakes=[
        Mistake(_sampler(crop=lambda ids, n: ids[:, :n]),
                "crop to the *last* block_size tokens, ids[:, -block_size:]: ids[:, :block_size] keeps the start of "
                "the text, so once it is longer than the block the model never sees the tokens it just wrote."),
        Mistake(_sampler(position=0),
                "take the logits of the last position, logits[:, -1, :]: position t predicts token t + 1, so only the "
                "last position predicts the token that comes next."),
        Mistake(_sampler(probabilities=_after_softmax),
                "divide the *logits* by the temperature, before the softmax: dividing the probabilities only "
                "rescales them, and torch.multinomial renormalises, so the temperature has no effect."),
        Mistake(_sampler(keep=_kth_plus_one),
                "the threshold is the k-th largest logit, torch.topk(logits, k).values[:, -1:] (index k - 1 of the "
                "sorted row): a threshold at index k keeps k + 1 tokens."),
        Mistake(_sampler(keep=_kth_smallest),
                "keep the k *largest* logits (torch.topk's default, largest=True): with largest=False the threshold "
                "is the k-th smallest logit and almost nothing is cut."),
        Mistake(_sampler(pick=lambda probs: probs.argmax(dim=-1, keepdim=True)),
                "draw the token with torch.multinomial(probs, num_samples=1, generator=generator): argmax is greedy "
                "decoding, which ignores the temperature, top-k and the generator."),
    ],
))


# ----------------------------------------------------------------------------------------------- 04.decoder_batch
def _decoder_batch(attention_mask):
    T = attention_mask.shape[1]
    return decoder_mask(T, 0, attention_mask), default_positions(T, 0, attention_mask)  # (B, 1, T, T), (B, T)


def _positions_ignore_padding(attention_mask):
    B, T = attention_mask.shape
    return decoder_mask(T, 0, attention_mask), torch.arange(T).expand(B, T)


def _padding_rows_empty(attention_mask):
    T = attention_mask.shape[1]
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    return causal_mask(T)[None, None] & keep, default_positions(T, 0, attention_mask)


def _positions_from_one(attention_mask):
    T = attention_mask.shape[1]
    return decoder_mask(T, 0, attention_mask), attention_mask.long().cumsum(dim=-1)


def _mask_on_queries(attention_mask):
    T = attention_mask.shape[1]
    keep = attention_mask.bool()[:, None, :, None]  # (B, 1, T, 1): the queries, not the keys
    return causal_mask(T)[None, None] & keep | torch.eye(T, dtype=torch.bool), default_positions(T, 0, attention_mask)


register(Exercise("04.decoder_batch", "a left-padded decoder batch: mask and positions", _decoder_batch, cases=[
        Case((torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),), label="2 prompts of 3 and 5 tokens, padded on the left"),
        Case((torch.tensor([[1, 1, 1, 1]]),), label="one prompt, no padding"),
        Case((torch.tensor([[False, True, True, True], [False, False, False, True]]),),
             label="a boolean mask, prompts of 3 tokens and of 1 token"),
        Case((torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]),),
             label="3 prompts of 3, 5 and 6 tokens"),
    ],
    mistakes=[
        Mistake(_positions_ignore_padding,
                "count the positions over the real tokens only, attention_mask.cumsum(-1) - 1 (0 for the padding): "
                "with torch.arange a left-padded prompt starts at position 2 or 3, not 0, and gets other outputs "
                "than alone."),
        Mistake(_padding_rows_empty,
                "let every position attend to itself (| the identity): a left-padding query sees only padding "
                "keys, its row is all False, and the softmax of a row of -inf is NaN."),
        Mistake(_positions_from_one,
                "subtract 1 from the running count: the first real token is position 0, as in a prompt without "
                "padding."),
        Mistake(_mask_on_queries,
                "the padding mask hides padding *keys* (the last dimension, shape (B, 1, 1, T)); you hid the padding "
                "queries, so real tokens still attend to the padding."),
    ],
    level="stretch", minutes=15,
))
