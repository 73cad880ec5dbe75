"""Run a model on one text (or a sentence pair) and collect what the attention views draw.

Shapes: ``L`` layers, ``H`` heads, ``T`` tokens, ``d`` head width.
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass

import numpy as np
import torch

MAX_TOKENS = 64  # beyond this the views get slow (H * T * T lines per layer) and large; see ``max_tokens``
_NO_WEIGHTS = ("sdpa", "flash_attention_2", "flash_attention_3", "paged_attention")


@dataclass(frozen=True)
class AttentionRun:
    """Tokens and attention weights of one forward pass."""

    tokens: list[str]  # as the tokenizer wrote them, e.g. "##ing", "Ġcat"
    attentions: torch.Tensor  # (L, H, T, T) float64 on the CPU; rows sum to 1
    sentence_b_start: int | None  # index of the first token of the second text, None for one text
    model_name: str  # class name, e.g. "BertModel"

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]


def display_tokens(tokens: list[str]) -> list[str]:
    """Tokens as the views print them: byte-level markers become spaces and a visible newline."""
    return [t.replace("Ġ", " ").replace("▁", " ").replace("Ċ", "\\n").replace("</w>", "") for t in tokens]


def _check_text(name: str, text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{name} must be a non-empty text, got {text!r}")


def encode(tokenizer, text: str, text_pair: str | None = None, max_tokens: int = MAX_TOKENS):
    """Tokenize one text or a pair as a batch of one; returns ``(encoding, tokens, sentence_b_start)``."""
    _check_text("text", text)
    if text_pair is not None:
        _check_text("text_pair", text_pair)
    encoding = tokenizer(text, text_pair, return_tensors="pt")
    ids = encoding["input_ids"][0]  # (T,)
    if len(ids) > max_tokens:
        raise ValueError(
            f"The text has {len(ids)} tokens, more than the view's limit of max_tokens={max_tokens} "
            "(long inputs make the view slow and the notebook large). Use a shorter text, or pass a larger "
            "max_tokens if you really want it."
        )
    tokens = tokenizer.convert_ids_to_tokens(ids.tolist())
    sentence_b_start = None
    if text_pair is not None:
        sentence_b_start = _second_text_start(encoding)
    return encoding, tokens, sentence_b_start


def _second_text_start(encoding) -> int:
    """Index of the first token of the second text ([CLS] and the first [SEP] go with the first text)."""
    try:
        segments = encoding.sequence_ids(0)  # 0, 1 or None (special tokens) per token; fast tokenizers only
    except ValueError:
        segments = encoding["token_type_ids"][0].tolist() if "token_type_ids" in encoding else []
    if 1 not in segments:
        raise ValueError("the tokenizer did not mark where text_pair starts (no sequence ids or token type ids); "
                         "give one text, or use a fast tokenizer")
    return segments.index(1)


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _eager_hint(model) -> str:
    name = type(model).__name__
    implementation = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return (
        f"{name} returned no attention weights: it runs the {implementation!r} attention implementation, which "
        'does not compute them. Load the model with attn_implementation="eager", e.g. '
        'course_lib.assets.load_encoder(attn_implementation="eager"), or call '
        'model.set_attn_implementation("eager").'
    )


def model_size(model) -> tuple[int, int]:
    """``(layers, heads)`` of a transformers model, from its config (checked before anything runs)."""
    config = getattr(model, "config", None)
    sizes = (getattr(config, "num_hidden_layers", None), getattr(config, "num_attention_heads", None))
    if not isinstance(model, torch.nn.Module) or not all(isinstance(n, int) for n in sizes):
        raise TypeError("model must be a transformers model (torch.nn.Module whose config has num_hidden_layers "
                        f"and num_attention_heads), got {type(model).__name__}")
    if getattr(config, "_attn_implementation", None) in _NO_WEIGHTS:
        raise ValueError(_eager_hint(model))
    return sizes


def run_attention(model, tokenizer, text: str, text_pair: str | None = None,
                  max_tokens: int = MAX_TOKENS) -> AttentionRun:
    """One forward pass with ``output_attentions=True`` (eval mode, float64, no gradients)."""
    model_size(model)
    encoding, tokens, sentence_b_start = encode(tokenizer, text, text_pair, max_tokens)
    device = _model_device(model)
    with _exact_eval(model, device), torch.inference_mode():
        output = model(**{k: v.to(device) for k, v in encoding.items()}, output_attentions=True)
    attentions = getattr(output, "attentions", None)
    if not attentions or any(a is None for a in attentions):
        raise ValueError(_eager_hint(model))
    weights = torch.stack([a[0] for a in attentions]).double().cpu()  # (L, H, T, T)
    return AttentionRun(tokens, weights, sentence_b_start, type(model).__name__)


@contextlib.contextmanager
def _exact_eval(model, device: torch.device):
    """For one call: eval mode (no dropout) and float64 weights, both undone afterwards.

    The views round the weights; computed in float32 a few of them land on the other side of a rounding
    boundary when the thread count or the CPU changes, and a stored view would no longer match a re-run.
    In float64 that does not happen. float32 -> float64 -> float32 is exact: the model comes back unchanged.
    (Some models still take their softmax in float32, e.g. Llama; their views are merely much more stable.)
    """
    tensors = [] if device.type == "mps" else [  # MPS has no float64
        t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    was_training = model.training
    model.eval()
    try:
        for tensor in tensors:
            tensor.data = tensor.data.to(torch.float64)
        yield
    finally:
        for tensor, dtype in zip(tensors, dtypes):
            tensor.data = tensor.data.to(dtype)
        model.train(was_training)


def rounded(values: torch.Tensor | np.ndarray, decimals: int) -> list:
    """Nested lists of numbers rounded to ``decimals`` places (``-0.0`` folded into ``0.0``)."""
    if not isinstance(decimals, int) or not 0 <= decimals <= 8:
        raise ValueError(f"decimals must be an integer from 0 to 8, got {decimals!r}")
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    return (np.round(array.astype(np.float64), decimals) + 0.0).tolist()


def check_index(name: str, value, size: int, what: str) -> int:
    """``value`` as an index into ``size`` items (a clear error otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name}={value} is out of range: the model has {size} {what} (0 to {size - 1})")
    return int(value)


def check_indices(name: str, values, size: int, what: str) -> list[int] | None:
    """A non-empty list of distinct indices, or None."""
    if values is None:
        return None
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = [values]
    values = [check_index(name, v, size, what) for v in values]
    if not values:
        raise ValueError(f"{name} must name at least one of the {size} {what}, got an empty list")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} has repeated entries: {values}")
    return values
