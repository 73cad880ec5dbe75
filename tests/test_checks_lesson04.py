"""Lesson 04 exercises: correct answers in other forms pass, wrong ones of many kinds fail for their reason.

The references are course_lib's causal_mask, masked_mean, top_k_filter and top_p_filter, which test_attention,
test_pooling and test_generation compare with PyTorch and transformers; train_step and warmup_cosine, tested
below against a loop written out and PyTorch's own schedulers; generate, decoder_mask and position_ids."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import check
from course_lib.checks.lesson04_decoder import TINY, LogitsOnly
from course_lib.generation import top_p_filter
from course_lib.gpt import GPT
from course_lib.pooling import masked_mean
from course_lib.training import train_step, warmup_cosine

INF = float("-inf")


def test_correct_answers_written_differently_also_pass():
    assert check("04.causal_mask", lambda T: torch.arange(T)[None, :] <= torch.arange(T)[:, None]).passed
    assert check("04.causal_mask", lambda T: torch.tril(torch.ones(T, T)).bool()).passed
    assert check("04.masked_mean", lambda h, m: torch.einsum("btd,bt->bd", h, m.float()) / m.sum(1, keepdim=True)
                 ).passed
    assert check("04.masked_mean", lambda h, m: torch.stack([row[keep.bool()].mean(0) for row, keep in zip(h, m)])
                 ).passed
    assert check("04.top_k_filter", lambda x, k: torch.where(
        x >= x.sort(dim=-1, descending=True).values[..., min(k, x.shape[-1]) - 1:min(k, x.shape[-1])], x, INF)
    ).passed

    def top_p_ascending(logits, p):  # the transformers way: drop the low tail whose mass stays within 1 - p
        sorted_logits, order = torch.sort(logits, dim=-1)
        drop_sorted = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1) <= 1 - p
        drop_sorted[..., -1] = False  # the most likely token always stays
        return logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), INF)

    assert check("04.top_p_filter", top_p_ascending).passed


# ------------------------------------------------------------------ the core and stretch exercises, written otherwise
def _step_with_nll(model, windows, optimizer, scheduler, max_norm):
    """log_softmax + nll_loss, views, a norm returned as a tensor."""
    x, y = windows[:, :-1], windows[:, 1:]
    log_probs = F.log_softmax(model(x), dim=-1)  # (B, T, V)
    loss = F.nll_loss(log_probs.view(-1, log_probs.size(-1)), y.contiguous().view(-1))
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
    optimizer.step()
    scheduler.step()
    return loss.detach(), norm


def _step_flattened(model, windows, optimizer, scheduler, max_norm):
    """flatten, the gradients zeroed at the end of the step (after the previous step nothing is left over)."""
    for p in model.parameters():
        p.grad = None
    logits = model(windows[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    scheduler.step()
    return float(loss.detach()), float(norm)


def _sample_with_topk_indices(model, ids, max_new_tokens, block_size, temperature, top_k, generator):
    """top-k with torch.where and a kth value from sort; the loop over a range with a clone of the ids."""
    out = ids.clone()
    for _ in range(max_new_tokens):
        logits = model(out[:, -block_size:])[:, -1] / temperature  # (B, V)
        if top_k:
            k = min(top_k, logits.size(-1))
            kth = logits.sort(dim=-1, descending=True).values[:, k - 1].unsqueeze(-1)
            logits = torch.where(logits >= kth, logits, torch.full_like(logits, -math.inf))
        token = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        out = torch.cat((out, token), dim=-1)
    return out


def _sample_with_course_filter(model, ids, max_new_tokens, block_size, temperature, top_k, generator):
    """course_lib's top_k_filter; the new tokens gathered in a list and joined at the end."""
    from course_lib.generation import top_k_filter

    new = []
    for _ in range(max_new_tokens):
        context = torch.cat([ids, *new], dim=1)[:, -block_size:]
        with torch.no_grad():
            logits = model(context)[:, -1, :]
        logits = logits / temperature
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
        new.append(torch.multinomial(logits.softmax(-1), num_samples=1, generator=generator))
    return torch.cat([ids, *new], dim=1)


def _decoder_batch_by_loops(attention_mask):
    """Two nested loops over queries and keys; positions counted by hand."""
    B, T = attention_mask.shape
    mask = torch.zeros(B, 1, T, T, dtype=torch.bool)
    positions = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        seen = 0
        for i in range(T):
            for j in range(i + 1):
                mask[b, 0, i, j] = bool(attention_mask[b, j]) or i == j
            if attention_mask[b, i]:
                positions[b, i] = seen
                seen += 1
    return mask, positions


def test_core_and_stretch_answers_written_differently_also_pass():
    assert check("04.train_step", _step_with_nll).passed
    assert check("04.train_step", _step_flattened).passed
    assert check("04.sample", _sample_with_topk_indices).passed
    assert check("04.sample", _sample_with_course_filter).passed
    assert check("04.decoder_batch", _decoder_batch_by_loops).passed


# ------------------------------------------------------------------ course_lib.training's step and schedule
def _tiny(seed=0):
    torch.manual_seed(seed)
    return LogitsOnly(GPT(TINY))


def test_train_step_equals_the_loop_written_out_and_returns_the_norm_before_clipping():
    windows = torch.randint(TINY.vocab_size, (3, 2, 7), generator=torch.Generator().manual_seed(0))
    ours, theirs = _tiny(), _tiny()
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (ours, theirs)]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, warmup_cosine(1, 3)) for o in optimizers]
    for batch in windows:
        loss, norm = train_step(ours, batch, optimizers[0], schedulers[0], max_norm=0.1)
        logits = theirs(batch[:, :-1])
        expected = F.cross_entropy(logits.reshape(-1, TINY.vocab_size), batch[:, 1:].reshape(-1))
        optimizers[1].zero_grad()
        expected.backward()
        expected_norm = torch.nn.utils.get_total_norm([p.grad for p in theirs.parameters()])
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
        optimizers[1].step()
        schedulers[1].step()
        assert isinstance(loss, float) and isinstance(norm, float)
        assert loss == pytest.approx(expected.item(), rel=1e-6) and norm == pytest.approx(expected_norm.item(), rel=1e-5)
        assert norm > 0.1  # clipping acted: the returned norm is the one before it
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b)


def test_train_step_rejects_windows_that_are_not_token_ids():
    model = _tiny()
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(1, 2))
    with pytest.raises(ValueError, match=r"shape \(batch, tokens \+ 1\)"):
        train_step(model, torch.rand(2, 5), optimizer, scheduler, 1.0)


def test_warmup_cosine_rises_linearly_then_follows_pytorchs_cosine_to_the_floor():
    warmup, total, floor = 4, 20, 0.1
    factor = warmup_cosine(warmup, total, floor)
    assert [factor(i) for i in range(warmup)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(total - 1) == pytest.approx(floor)
    # after the warm-up: PyTorch's CosineAnnealingLR from 1 to the floor over the remaining steps
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=floor)
    for i in range(warmup - 1, total):
        assert factor(i) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-9), i
        optimizer.step()
        cosine.step()
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine(10, 10)


def test_wrong_answer_outside_the_known_mistakes_fails_without_a_hint():
    result = check("04.top_p_filter", lambda logits, p: logits)  # never filters anything
    assert not result.passed and result.hint is None and "p = 0.6" in result.message


def _mean_of_the_first_tokens(hidden, mask):
    lengths = mask.long().sum(dim=1).tolist()  # assumes the real tokens come first
    return torch.stack([row[:length].mean(dim=0) for row, length in zip(hidden, lengths)])


def _mean_in_place(hidden, mask):
    hidden *= mask.unsqueeze(-1)  # zeroes the caller's padding vectors
    return hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True)


def _top_k_exactly_k(logits, k):
    k = min(k, logits.shape[-1])
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, torch.topk(logits, k).indices, True)
    return logits.masked_fill(~keep, INF)  # exactly k tokens: a tie with the k-th is dropped


def _top_k_in_place(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[-1])).values[..., -1:]
    logits[logits < kth] = INF  # fills the caller's logits
    return logits


def _top_p(probabilities=lambda sorted_logits: torch.softmax(sorted_logits, dim=-1), unsort="scatter"):
    """The nucleus filter with a pluggable probability step and way back to vocabulary order."""
    def top_p(logits, p):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = probabilities(sorted_logits)
        drop_sorted = probs.cumsum(dim=-1) - probs >= p
        drop = drop_sorted.scatter(-1, order, drop_sorted) if unsort == "scatter" else drop_sorted.gather(-1, order)
        return logits.masked_fill(drop, INF)
    return top_p


def _wrong_step(inputs=lambda w: w[:, :-1], targets=lambda w: w[:, 1:], reduction="mean",
                order=("zero_grad", "backward", "clip", "step", "schedule"),
                clip=lambda model, max_norm: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)):
    """A training step with one part replaceable: the inputs, the targets, the loss, the order of the calls."""
    def step(model, windows, optimizer, scheduler, max_norm):
        logits = model(inputs(windows))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets(windows).reshape(-1),
                               reduction=reduction)
        norm = None
        for call in order:
            if call == "zero_grad":
                optimizer.zero_grad()
            elif call == "backward":
                loss.backward()
            elif call == "clip":
                norm = clip(model, max_norm)
            elif call == "step":
                optimizer.step()
            else:
                scheduler.step()
        return loss.item(), norm.item()
    return step


def _wrong_sample(crop=lambda ids, n: ids[:, -n:], scale=lambda logits, t: logits / t,
                  filter=lambda logits, k: logits.masked_fill(
                      logits < torch.topk(logits, min(k, logits.shape[-1])).values[:, -1:], float("-inf")),
                  draw=lambda probs, g: torch.multinomial(probs, 1, generator=g)):
    """The sampling loop with one part replaceable."""
    def sample(model, ids, max_new_tokens, block_size, temperature, top_k, generator):
        for _ in range(max_new_tokens):
            logits = scale(model(crop(ids, block_size))[:, -1, :], temperature)
            if top_k is not None:
                logits = filter(logits, top_k)
            ids = torch.cat([ids, draw(torch.softmax(logits, dim=-1), generator)], dim=1)
        return ids
    return sample


# Wrong answers as other students would write them (none is a listed mistake); each must fail, and for the reason
# it models: the fragment must be in the message.
WRONG = [
    # 0/1 floats from torch.ones(T, T).tril()
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T).tril(), "expected a torch.bool tensor, got "
                 "torch.float32", id="float-tril"),
    # 0/1 integers
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.long).tril(), "expected a torch.bool "
                 "tensor, got torch.int64", id="long-tril"),
    # one token ahead visible (diagonal=1)
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.bool).tril(diagonal=1), "values differ",
                 id="one-ahead"),
    # each token sees only itself
    pytest.param("04.causal_mask", lambda T: torch.eye(T, dtype=torch.bool), "values differ", id="identity"),
    # a batch and head dimension added
    pytest.param("04.causal_mask", lambda T: torch.ones(T, T, dtype=torch.bool).tril()[None, None],
                 "expected shape", id="extra-dims"),
    # the first `length` vectors averaged: right only when the padding is at the end
    pytest.param("04.masked_mean", _mean_of_the_first_tokens, "padded on the LEFT", id="lengths-slice"),
    # the caller's hidden states multiplied in place
    pytest.param("04.masked_mean", _mean_in_place, "changed its input hidden in place", id="in-place"),
    # the [CLS] vector instead of the mean
    pytest.param("04.masked_mean", lambda hidden, mask: hidden[:, 0], "values differ", id="cls"),
    # the padding masked to -inf and the maximum taken
    pytest.param("04.masked_mean", lambda hidden, mask: hidden.masked_fill(~mask.bool()[..., None], INF).amax(1),
                 "values differ", id="max-pool"),
    # the sum over the real tokens, not the mean
    pytest.param("04.masked_mean", lambda hidden, mask: (hidden * mask[..., None]).sum(dim=1), "values differ",
                 id="sum"),
    # exactly k tokens kept: a tie with the k-th logit is dropped
    pytest.param("04.top_k_filter", _top_k_exactly_k, "ties with the k-th largest", id="exactly-k"),
    # the caller's logits overwritten
    pytest.param("04.top_k_filter", _top_k_in_place, "changed its input logits in place", id="in-place"),
    # only the k kept values, not a full row
    pytest.param("04.top_k_filter", lambda logits, k: torch.topk(logits, min(k, logits.shape[-1])).values,
                 "expected shape", id="values-only"),
    # the threshold at index k of the sorted row: k + 1 tokens, and a crash when k is the vocabulary size
    pytest.param("04.top_k_filter", lambda logits, k: logits.masked_fill(logits < logits.sort(
        dim=-1, descending=True).values[..., k:k + 1], INF), "8 logits, k = 3", id="index-k"),
    # one k-th value for the whole batch
    pytest.param("04.top_k_filter", lambda logits, k: logits.masked_fill(logits < torch.topk(
        logits.flatten(), min(k, logits.numel())).values[-1], INF), "a batch of 2 rows", id="global-threshold"),
    # the cumulative sum of the logits themselves, no softmax
    pytest.param("04.top_p_filter", _top_p(probabilities=lambda sorted_logits: sorted_logits), "values differ",
                 id="no-softmax"),
    # back to vocabulary order with gather (the inverse permutation needs scatter)
    pytest.param("04.top_p_filter", _top_p(unsort="gather"), "values differ", id="gather"),
    # a threshold on each probability instead of on the cumulative sum
    pytest.param("04.top_p_filter", lambda logits, p: logits.masked_fill(torch.softmax(logits, dim=-1) < 1 - p, INF),
                 "values differ", id="probability-threshold"),
    # the caller's logits filled in place
    pytest.param("04.top_p_filter", lambda logits, p: logits.masked_fill_(top_p_filter(logits.clone(), p) == INF, INF),
                 "changed its input logits in place", id="in-place"),
    # the filter and the mask returned together
    pytest.param("04.top_p_filter", lambda logits, p: (top_p_filter(logits, p), top_p_filter(logits, p) == INF),
                 "expected a torch.Tensor, got tuple", id="tuple"),
    # ---- 04.train_step
    # the loss of each position predicting itself: inputs and targets both the whole window
    pytest.param("04.train_step", _wrong_step(inputs=lambda w: w, targets=lambda w: w), "the loss of step 1",
                 id="no-shift-whole-window"),
    # the targets shifted the wrong way: each position asked for the token before it
    pytest.param("04.train_step", _wrong_step(inputs=lambda w: w[:, 1:], targets=lambda w: w[:, :-1]),
                 "the loss of step 1", id="shifted-backwards"),
    # gradients zeroed after backward, just before the step: the optimizer sees zeros
    pytest.param("04.train_step", _wrong_step(order=("backward", "zero_grad", "clip", "step", "schedule")),
                 "the loss of step 2", id="zero-grad-after-backward"),
    # the scheduler never stepped: a constant learning rate (the warm-up's first, tiny one)
    pytest.param("04.train_step", _wrong_step(order=("zero_grad", "backward", "clip", "step")),
                 "the loss of step 3", id="no-scheduler"),
    # clipping each parameter's values instead of the gradient norm
    pytest.param("04.train_step", _wrong_step(clip=lambda model, max_norm: torch.nn.utils.clip_grad_value_(
        model.parameters(), max_norm)), "raised", id="clip-value"),
    # the loss summed over positions instead of averaged
    pytest.param("04.train_step", _wrong_step(reduction="sum"), "the loss of step 1", id="summed-loss"),
    # the loss tensor returned, with the model's training graph, and no norm
    pytest.param("04.train_step", lambda model, windows, optimizer, scheduler, max_norm: _wrong_step()(
        model, windows, optimizer, scheduler, max_norm)[0], "raised", id="loss-only"),
    # ---- 04.sample
    # the whole history fed to the model: past the block the model refuses it
    pytest.param("04.sample", _wrong_sample(crop=lambda ids, n: ids), "raised", id="no-crop"),
    # the last block_size - 1 tokens: the model always sees one token too few
    pytest.param("04.sample", _wrong_sample(crop=lambda ids, n: ids[:, -(n - 1):]), "values differ", id="crop-short"),
    # the temperature multiplied instead of divided
    pytest.param("04.sample", _wrong_sample(scale=lambda logits, t: logits * t), "temperature 0.7",
                 id="temperature-times"),
    # top-k before the temperature with a probability threshold of 1/k
    pytest.param("04.sample", _wrong_sample(filter=lambda logits, k: logits.masked_fill(
        torch.softmax(logits, -1) < 1 / k, float("-inf"))), "top-k 4", id="threshold-one-over-k"),
    # the prompt dropped: only the new tokens returned
    pytest.param("04.sample", lambda model, ids, n, block, t, k, g: _wrong_sample()(model, ids, n, block, t, k, g)[
        :, ids.shape[1]:], "expected shape", id="new-tokens-only"),
    # ---- 04.decoder_batch
    # right-padding positions: the count of all tokens so far, padding included
    pytest.param("04.decoder_batch", lambda m: (_decoder_batch_by_loops(m)[0], torch.arange(m.shape[1]).repeat(
        m.shape[0], 1) - (m.shape[1] - m.long().sum(-1, keepdim=True))), "item 1", id="negative-positions"),
    # the mask as 0/1 integers
    pytest.param("04.decoder_batch", lambda m: (_decoder_batch_by_loops(m)[0].long(), _decoder_batch_by_loops(m)[1]),
                 "expected a torch.bool tensor", id="long-mask"),
    # the causal mask alone: padding keys still visible
    pytest.param("04.decoder_batch", lambda m: (torch.ones(m.shape[1], m.shape[1], dtype=torch.bool).tril().expand(
        m.shape[0], 1, -1, -1), _decoder_batch_by_loops(m)[1]), "item 0", id="causal-only"),
]



def test_a_function_that_crashes_gets_a_message_not_an_exception():
    # torch.topk refuses a k larger than the row: the case with k = 10 over 6 tokens says so
    result = check("04.top_k_filter", lambda x, k: x.masked_fill(x < torch.topk(x, k).values[..., -1:], INF))
    assert not result.passed and "raised RuntimeError" in result.message and "k = 10" in result.message


# ------------------------------------------------------------------ references against the real libraries
def test_masked_mean_of_a_padded_batch_equals_the_mean_of_the_sentence_alone(tokenizer, hf_encoder):
    sentence = "The jokes never land."
    alone = tokenizer(sentence, return_tensors="pt")
    batch = tokenizer([sentence, "A warm, funny and beautifully acted film with a great cast."], padding=True,
                      return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # the sentence is padded
    with torch.no_grad():
        alone_hidden = hf_encoder(**alone).last_hidden_state  # (1, T0, D)
        batch_hidden = hf_encoder(**batch).last_hidden_state  # (2, T, D)
    pooled = masked_mean(batch_hidden, batch["attention_mask"])
    torch.testing.assert_close(pooled[0], alone_hidden[0].mean(0), atol=1e-5, rtol=0)
    assert (batch_hidden[0].mean(0) - alone_hidden[0].mean(0)).abs().max() > 1e-2  # the naive mean is off
