"""A BERT-style encoder built from the course's attention, able to load the real MiniLM weights.

Shapes: ``B`` batch, ``T`` tokens, ``D`` hidden size, ``H`` heads, ``I`` feed-forward width.
The module names map one-to-one onto Hugging Face's ``BertModel`` (see :data:`BERT_LAYER_NAMES`), so
loading a checkpoint is a rename table. ``norm_first=True`` gives the pre-LN variant.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.assets import encoder_path
from course_lib.attention import MultiHeadAttention, padding_mask
from course_lib.checkpoints import read_checkpoint, split_prefix
from course_lib.pooling import masked_mean
from course_lib.runtime.errors import CourseInputError
from course_lib.runtime.validate import one_of


@dataclass
class EncoderConfig:
    """Sizes of the encoder; the defaults are those of the course's MiniLM (all-MiniLM-L6-v2)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    norm_first: bool = False  # False: post-LN as in BERT; True: pre-LN (LayerNorm before each sub-layer)
    position_embedding: str = "learned"  # or "sinusoidal" (fixed, not trained)

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CourseInputError(f"EncoderConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads != 0:
            raise CourseInputError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise CourseInputError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.position_embedding not in ("learned", "sinusoidal"):
            raise CourseInputError(
                f"position_embedding must be 'learned' or 'sinusoidal', got {self.position_embedding!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_bert_config(cls, config: dict) -> EncoderConfig:
        """Read a Hugging Face BERT ``config.json`` (as a dict); refuse settings this encoder does not implement."""
        unsupported = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
        for key, wanted in unsupported.items():
            if config.get(key, wanted) != wanted:
                raise CourseInputError(
                    f"config.json has {key}={config[key]!r}; this encoder implements {key}={wanted!r}")
        names = {  # course field <- Hugging Face key
            "vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
            "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
            "max_position": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
            "layer_norm_eps": "layer_norm_eps", "dropout": "hidden_dropout_prob",
        }
        missing = [key for key in names.values() if key not in config]
        if missing:
            raise CourseInputError(f"config.json lacks {missing}; is it a BERT config?")
        return cls(**{ours: config[theirs] for ours, theirs in names.items()})


# ----------------------------------------------------------------------------------------------- inputs
def sinusoidal_positions(num_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """The fixed positions of "Attention Is All You Need": PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos."""
    if num_positions < 1 or dim < 2 or dim % 2:
        raise CourseInputError(
            f"need num_positions >= 1 and an even dim >= 2, got num_positions={num_positions}, dim={dim}")
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    frequency = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    angle = position * frequency  # (P, dim/2)
    table = torch.stack([angle.sin(), angle.cos()], dim=-1)  # (P, dim/2, 2): sin, cos side by side
    return table.flatten(1).float()  # (P, dim), columns interleaved: sin, cos, sin, cos, ...


class Embeddings(nn.Module):
    """Token + position + token-type embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding == "learned":
            self.position_embeddings = nn.Embedding(config.max_position, config.hidden_size)
        else:  # a fixed table, stored with the model but not trained
            self.register_buffer("sinusoidal", sinusoidal_positions(config.max_position, config.hidden_size),
                                 persistent=False)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def positions(self, T: int, position_ids: Tensor | None = None) -> Tensor:
        """(T, D) position vectors for positions 0..T-1, or (B, T, D) for the given ``position_ids`` (B, T)."""
        table = self.position_embeddings.weight if hasattr(self, "position_embeddings") else \
            self.sinusoidal.to(self.word_embeddings.weight.dtype)  # (P, D)
        return table[:T] if position_ids is None else table[position_ids]

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        """input_ids, token_type_ids, position_ids: (B, T) -> (B, T, D)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, D)
        x = x + self.positions(input_ids.shape[1], position_ids)  # (B, T, D) + (T, D) or (B, T, D)
        return self.dropout(self.norm(x))


# ----------------------------------------------------------------------------------------------- layers
ACTIVATIONS = ("gelu", "gelu_tanh")


class FeedForward(nn.Module):
    """Position-wise feed-forward: expand D -> I, GELU, project I -> D.

    ``activation``: ``"gelu"``, the exact erf form (BERT), or ``"gelu_tanh"``, the tanh approximation (GPT-2).
    The encoder's layers and the GPT's blocks (:mod:`course_lib.gpt`) both use it.
    """

    def __init__(self, dim: int, hidden_dim: int, activation: str = "gelu"):
        super().__init__()
        self.approximate = {"gelu": "none", "gelu_tanh": "tanh"}[one_of("activation", activation, ACTIVATIONS)]
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.gelu(self.linear1(x), approximate=self.approximate)  # (B, T, D) -> (B, T, I)
        return self.linear2(hidden)  # (B, T, D)


class EncoderLayer(nn.Module):
    """Self-attention and feed-forward, each wrapped in a residual connection and a LayerNorm.

    Post-LN (BERT): ``x = norm(x + sublayer(x))``. Pre-LN: ``x = x + sublayer(norm(x))``.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.norm_first = config.norm_first
        self.attention = MultiHeadAttention(config.hidden_size, config.num_heads, dropout=config.dropout)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config.hidden_size, config.intermediate_size)
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D), mask: (B, 1, 1, T) boolean -> (B, T, D), weights (B, H, T, T) or None."""
        if self.norm_first:
            attended, weights = self.attention(self.attention_norm(x), mask=mask, need_weights=need_weights)
            x = x + self.dropout(attended)
            x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        else:
            attended, weights = self.attention(x, mask=mask, need_weights=need_weights)
            x = self.attention_norm(x + self.dropout(attended))
            x = self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))
        return x, weights


class Pooler(nn.Module):
    """BERT's pooler: a dense layer and tanh on the first ([CLS]) token."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, D) -> (B, D)


@dataclass
class EncoderOutput:
    """What :class:`Encoder` returns (the names of ``transformers``' outputs)."""

    last_hidden_state: Tensor  # (B, T, D)
    pooler_output: Tensor  # (B, D)
    hidden_states: tuple[Tensor, ...]  # num_layers + 1 of (B, T, D): the embeddings, then each layer
    attentions: tuple[Tensor, ...] | None = None  # num_layers of (B, H, T, T) when asked for


def _check_ids(name: str, ids: Tensor, shape: torch.Size | None, limit: int, limit_name: str) -> None:
    """``ids`` must be an integer tensor of ``shape`` (or (B, T) when None) with values in [0, limit)."""
    if not isinstance(ids, Tensor):
        raise CourseInputError(f"{name} must be a torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or (ids.dtype == torch.bool and name != "attention_mask"):
        raise CourseInputError(f"{name} must be an integer tensor (e.g. torch.long), got dtype {ids.dtype}")
    if shape is None and (ids.dim() != 2 or ids.numel() == 0):
        raise CourseInputError(
            f"expected {name} of shape (batch, tokens) with at least one token, got {tuple(ids.shape)}")
    if shape is not None and ids.shape != shape:
        raise CourseInputError(f"{name} must have the shape of input_ids {tuple(shape)}, got {tuple(ids.shape)}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= limit:
        raise CourseInputError(f"{name} must lie in [0, {limit}) ({limit_name}), got values from {low} to {high}")


class Encoder(nn.Module):
    """The stack: embeddings, ``num_layers`` encoder layers (plus a final LayerNorm when pre-LN), pooler."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.norm_first else None
        self.pooler = Pooler(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_attentions: bool = False, position_ids: Tensor | None = None) -> EncoderOutput:
        """input_ids (B, T) integer; attention_mask (B, T) 0/1; token_type_ids (B, T); position_ids (B, T), by
        default 0..T-1. Attention weights are computed by the course's attention when ``output_attentions``, else
        by PyTorch's fused kernel."""
        config = self.config
        _check_ids("input_ids", input_ids, None, config.vocab_size, "vocab_size")
        if input_ids.shape[1] > config.max_position:
            raise CourseInputError(f"input_ids has {input_ids.shape[1]} tokens, more than max_position="
                             f"{config.max_position}; truncate the input (tokenizer(..., truncation=True))")
        mask = None
        if attention_mask is not None:
            _check_ids("attention_mask", attention_mask, input_ids.shape, 2, "0 = padding, 1 = token")
            if not attention_mask.any(dim=1).all():
                raise CourseInputError("every sequence needs at least one token with attention_mask 1")
            if not attention_mask.all():  # without any padding the mask stays None: the fused kernel is faster
                mask = padding_mask(attention_mask)  # (B, 1, 1, T)
        if token_type_ids is not None:
            _check_ids("token_type_ids", token_type_ids, input_ids.shape, config.type_vocab_size, "type_vocab_size")
        if position_ids is not None:
            _check_ids("position_ids", position_ids, input_ids.shape, config.max_position, "max_position")

        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, D)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, weights = layer(x, mask, need_weights=output_attentions)  # (B, T, D), (B, H, T, T) or None
            hidden_states.append(x)
            attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
            hidden_states[-1] = x  # pre-LN: the last hidden state is the normalised one
        return EncoderOutput(
            last_hidden_state=x,
            pooler_output=self.pooler(x),
            hidden_states=tuple(hidden_states),
            attentions=tuple(attentions) if output_attentions else None,
        )


class SequenceClassifier(nn.Module):
    """An encoder with a classification head on a pooled vector: ``pooling`` "pooler" (BERT), "cls" or "mean"."""

    def __init__(self, config: EncoderConfig, num_labels: int, pooling: str = "pooler", encoder: Encoder | None = None):
        super().__init__()
        if pooling not in ("pooler", "cls", "mean"):
            raise CourseInputError(f"pooling must be 'pooler', 'cls' or 'mean', got {pooling!r}")
        if num_labels < 1:
            raise CourseInputError(f"num_labels must be positive, got {num_labels}")
        self.pooling = pooling
        self.encoder = Encoder(config) if encoder is None else encoder
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """(B, T) ids -> (B, num_labels) logits."""
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        if self.pooling == "pooler":
            pooled = out.pooler_output  # (B, D)
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]  # (B, D)
        else:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            pooled = masked_mean(out.last_hidden_state, mask)  # (B, D)
        return self.classifier(self.dropout(pooled))  # (B, num_labels)


# ----------------------------------------------------------------------------------------------- counting
_COMPONENTS = (  # (label, words that identify a parameter's name); the first match wins
    ("token embeddings", ("word_embeddings",)),
    ("position embeddings", ("position_embeddings",)),
    ("token-type embeddings", ("token_type_embeddings",)),
    ("layer norms", ("norm", "layernorm")),
    ("attention", ("attention",)),
    ("feed-forward", ("feed_forward", "intermediate", "output.dense")),
    ("pooler", ("pooler",)),
    ("classifier", ("classifier",)),
)


def count_parameters_by_component(model: nn.Module) -> dict[str, int]:
    """Trainable parameters grouped by role (embeddings, attention, feed-forward, norms, heads).

    Works on the course's modules and on ``transformers``' BERT models; the values sum to the total.
    """
    counts: dict[str, int] = {label: 0 for label, _ in _COMPONENTS}
    for name, parameter in model.named_parameters():
        lowered = name.lower()
        label = next((label for label, words in _COMPONENTS if any(w in lowered for w in words)), "other")
        counts[label] = counts.get(label, 0) + parameter.numel()
    return {label: n for label, n in counts.items() if n}


# ----------------------------------------------------------------------------------------------- loading
EMBEDDING_NAMES = {  # Hugging Face BertModel name -> course Encoder name
    "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "pooler.dense.weight": "pooler.dense.weight",
    "pooler.dense.bias": "pooler.dense.bias",
}
BERT_LAYER_NAMES = {  # inside "encoder.layer.{i}." -> inside "layers.{i}."
    "attention.self.query.weight": "attention.query.weight",
    "attention.self.query.bias": "attention.query.bias",
    "attention.self.key.weight": "attention.key.weight",
    "attention.self.key.bias": "attention.key.bias",
    "attention.self.value.weight": "attention.value.weight",
    "attention.self.value.bias": "attention.value.bias",
    "attention.output.dense.weight": "attention.out_proj.weight",
    "attention.output.dense.bias": "attention.out_proj.bias",
    "attention.output.LayerNorm.weight": "attention_norm.weight",
    "attention.output.LayerNorm.bias": "attention_norm.bias",
    "intermediate.dense.weight": "feed_forward.linear1.weight",
    "intermediate.dense.bias": "feed_forward.linear1.bias",
    "output.dense.weight": "feed_forward.linear2.weight",
    "output.dense.bias": "feed_forward.linear2.bias",
    "output.LayerNorm.weight": "feed_forward_norm.weight",
    "output.LayerNorm.bias": "feed_forward_norm.bias",
}
IGNORED_NAMES = {"embeddings.position_ids"}  # a constant buffer (0, 1, 2, ...) that some checkpoints carry


def bert_name_map(num_layers: int) -> dict[str, str]:
    """Every Hugging Face ``BertModel`` weight name -> the course :class:`Encoder` name."""
    names = dict(EMBEDDING_NAMES)
    for i in range(num_layers):
        names.update({f"encoder.layer.{i}.{hf}": f"layers.{i}.{ours}" for hf, ours in BERT_LAYER_NAMES.items()})
    return names


def load_pretrained_encoder(source=None, *, config: dict | None = None,
                            head: str = "drop") -> tuple[Encoder | SequenceClassifier, EncoderConfig]:
    """The course :class:`Encoder` (eval mode) with a BERT checkpoint's weights, and its config.

    ``source``: a BERT folder (``config.json`` + ``model.safetensors``; default: the course's MiniLM), a
    ``transformers`` BERT model in memory, or a state dict with ``config`` (see
    :func:`~course_lib.checkpoints.read_checkpoint`). A checkpoint saved with a task head (``bert.`` + the head):
    ``head="drop"`` loads the body and warns which weights it left out; ``head="keep"`` returns a
    :class:`SequenceClassifier` on the pooler output with the head's weights (a sequence-classification head
    only). Any other missing or unexpected weight is an error that lists them.
    """
    one_of("head", head, ("drop", "keep"))
    settings, checkpoint = read_checkpoint(encoder_path() if source is None else source, config)
    config = EncoderConfig.from_bert_config(settings)
    body, task_head = split_prefix(checkpoint, "bert.")
    task_head = {name: tensor for name, tensor in task_head.items() if name not in IGNORED_NAMES}
    names = bert_name_map(config.num_layers)
    missing = sorted(set(names) - set(body))
    unexpected = sorted(set(body) - set(names) - IGNORED_NAMES)
    if missing or unexpected:
        raise KeyError(f"{source or 'the checkpoint'} does not match a {config.num_layers}-layer BERT encoder: "
                       f"missing {missing or 'none'}; unexpected {unexpected or 'none'}")
    if head == "keep" and sorted(task_head) != ["classifier.bias", "classifier.weight"]:
        raise CourseInputError(f"head='keep' loads a sequence-classification head (classifier.weight, "
                               f"classifier.bias); this checkpoint's head is {sorted(task_head) or 'absent'}")
    encoder = Encoder(config)
    own = encoder.state_dict()
    for hf, ours in names.items():
        if body[hf].shape != own[ours].shape:
            raise CourseInputError(f"{hf} has shape {tuple(body[hf].shape)}; {ours} needs {tuple(own[ours].shape)}")
    encoder.load_state_dict({ours: body[hf] for hf, ours in names.items()}, strict=True)
    if head == "drop":
        if task_head:
            warnings.warn(f"loaded the BERT body only; left out the task head {sorted(task_head)} "
                          "(head='keep' keeps a classification head)", stacklevel=2)
        return encoder.eval(), config
    weight = task_head["classifier.weight"]  # (num_labels, D)
    model = SequenceClassifier(config, weight.shape[0], pooling="pooler", encoder=encoder)
    model.classifier.load_state_dict({"weight": weight, "bias": task_head["classifier.bias"]})
    return model.eval(), config
