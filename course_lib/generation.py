"""Text generation for the course decoders: greedy decoding and sampling with temperature, top-k and top-p,
a seeded sampler, stopping at end-of-sequence, and a KV cache.

``logits`` are ``(..., V)`` scores over the vocabulary; a filtered-out token gets ``-inf`` (probability 0).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from course_lib.attention import KVCache
from course_lib.runtime.errors import CourseInputError

__all__ = ["top_k_filter", "top_p_filter", "next_token_distribution", "next_token", "generate"]

STRATEGIES = ("greedy", "sample")


def _check_logits(logits) -> None:
    if not isinstance(logits, Tensor):
        raise CourseInputError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise CourseInputError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise CourseInputError(f"expected logits of shape (..., vocab) with vocab >= 1, got {tuple(logits.shape)}")


def _check_settings(temperature, top_k, top_p) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise CourseInputError(f"temperature must be a number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise CourseInputError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise CourseInputError(f"top_p must be a number in (0, 1] (or None for no limit), got {top_p!r}")


def _token_ids(name: str, value, vocab_size: int) -> tuple[int, ...]:
    """``None``, one id or a list of ids, each in ``[0, vocab_size)``, as a tuple."""
    ids = () if value is None else (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(ids, (tuple, list)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise CourseInputError(f"{name} must be a token id (int) or a list of ids, got {value!r}")
    outside = [i for i in ids if not 0 <= i < vocab_size]
    if outside:
        raise CourseInputError(f"{name} {outside} lies outside this model's vocabulary [0, {vocab_size}); "
                               "is it the id of another tokenizer?")
    return tuple(ids)


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest logits of each row (and any tied with the k-th); set the rest to ``-inf``."""
    _check_logits(logits)
    _check_settings(1.0, k, None)
    k = min(k, logits.shape[-1])
    kth_best = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth_best, float("-inf"))  # (..., V)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the most likely tokens until their probabilities add up to ``p``; always keep one."""
    _check_logits(logits)
    _check_settings(1.0, None, p)
    if p == 1:  # the whole distribution is the nucleus: nothing to drop (and no rounding of a cumsum to trust)
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits, dim=-1)  # (..., V)
    mass_before = probs.cumsum(dim=-1) - probs  # (..., V): probability of the better tokens
    drop_sorted = mass_before >= p  # the nucleus is already full; the best token has mass_before 0 and stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (..., V) back in vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_token_distribution(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None) -> Tensor:
    """Probabilities of the next token ``(..., V)``: divide by the temperature, then top-k, then top-p."""
    _check_logits(logits)
    _check_settings(temperature, top_k, top_p)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits.float(), dim=-1)


def next_token(logits: Tensor, strategy: str = "greedy", temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Pick one token per row of ``(B, V)`` logits: the most likely one, or a draw from the filtered distribution."""
    if strategy not in STRATEGIES:
        raise CourseInputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "greedy":
        _check_logits(logits)
        return logits.argmax(dim=-1)  # (B,): temperature, top-k and top-p never change the best token
    probs = next_token_distribution(logits, temperature, top_k, top_p)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


@torch.no_grad()
def generate(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    attention_mask: Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Extend ``(B, T)`` prompts by up to ``max_new_tokens`` tokens; returns prompts + new tokens ``(B, T + n)``.

    ``strategy="sample"`` draws from the distribution shaped by ``temperature``/``top_k``/``top_p``, reproducibly
    with ``seed`` (or your own ``generator``). A row that produced ``eos_token_id`` (one id, or a list of ids as in
    many generation configs) is then filled with ``pad_token_id`` (default: the first EOS id); generation stops
    when every row has finished. For a batch of prompts
    of different lengths, pad on the left and pass ``attention_mask``. The model runs in eval mode.
    """
    if strategy not in STRATEGIES:
        raise CourseInputError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or not all(hasattr(config, key) for key in ("vocab_size", "context_length",
                                                                                     "num_layers")):
        raise CourseInputError(f"generate() drives the course's decoders (GPT, LlamaForCausalLM), got "
                               f"{type(model).__name__}; a transformers model has its own model.generate()")
    _check_settings(temperature, top_k, top_p)
    if not isinstance(input_ids, Tensor) or input_ids.dtype != torch.long or input_ids.dim() != 2:
        got = f"{input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor) \
            else type(input_ids).__name__
        raise CourseInputError(f"expected input_ids as a torch.long tensor of shape (batch, tokens), got {got}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise CourseInputError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    bad_mask = not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape
    if attention_mask is not None and bad_mask:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask).__name__
        raise CourseInputError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    if seed is not None and generator is not None:
        raise CourseInputError("pass either seed or generator, not both")
    if seed is not None:
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
    vocab = model.config.vocab_size
    eos_ids = _token_ids("eos_token_id", eos_token_id, vocab)  # () when there is no end-of-sequence token
    if pad_token_id is not None:
        _token_ids("pad_token_id", pad_token_id, vocab)
    pad_token_id = eos_ids[0] if pad_token_id is None and eos_ids else pad_token_id
    eos = torch.tensor(eos_ids, dtype=torch.long, device=input_ids.device)  # (E,)

    was_training = model.training
    model.eval()
    context = model.config.context_length
    reserve = min(input_ids.shape[1] + max_new_tokens, context)  # every token the cache will hold
    cache = KVCache(model.config.num_layers, capacity=max(reserve, 1)) if use_cache else None
    ids, mask = input_ids, attention_mask  # (B, T), (B, T) or None
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)  # (B,)
    try:
        for _ in range(max_new_tokens):
            if cache is not None and ids.shape[1] > context:
                cache = None  # learned positions run out: from now on re-read the last `context` tokens each step
            if cache is None:
                window = ids[:, -context:]  # (B, <= context)
                window_mask = None if mask is None else mask[:, -context:]
                logits = model(window, attention_mask=window_mask)[0]  # (B, T, V)
            else:
                new = ids[:, cache.length:]  # (B, T) on the first step, then (B, 1)
                logits = model(new, attention_mask=mask, cache=cache)[0]  # (B, T or 1, V)
            token = next_token(logits[:, -1, :], strategy, temperature, top_k, top_p, generator)  # (B,)
            if eos_ids:
                token = token.masked_fill(finished, pad_token_id)
                finished |= torch.isin(token, eos)
            ids = torch.cat([ids, token[:, None]], dim=1)  # (B, T + 1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            if eos_ids and finished.all():
                break
    finally:
        model.train(was_training)
    return ids
