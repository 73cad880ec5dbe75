"""LoRA (Hu et al. 2021) by hand: a frozen linear layer plus a trainable low-rank update (lesson 08).

A pretrained ``nn.Linear`` computes ``y = x W^T + b`` with ``W`` of shape (out, in). LoRA keeps ``W`` frozen and
learns ``ΔW = (alpha / r) · B A`` with ``A`` (r, in) and ``B`` (out, r), r much smaller than in and out:

    y = x W^T + b + (alpha / r) · dropout(x) A^T B^T

``A`` starts like an ``nn.Linear`` weight (Kaiming-uniform), ``B`` starts at zero, so a freshly wrapped model
computes exactly what the pretrained one did. The names and shapes match ``peft``'s ``lora_A`` / ``lora_B``
weights, so tests can copy one into the other. Shapes: ``...`` any leading dimensions (batch, tokens).

>>> model = apply_lora(model, target_modules=("query", "value"), r=8, alpha=16)   # wraps in place
>>> merged = merge_lora(model)        # every LoRALinear replaced by a plain nn.Linear holding W + ΔW
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from course_lib.runtime.validate import CourseInputError, names, number, positive_int, tensor


def lora_update(x: Tensor, lora_A: Tensor, lora_B: Tensor, scaling: float) -> Tensor:
    """The low-rank part alone, ``scaling · (x A^T) B^T``: x (..., in), A (r, in), B (out, r) -> (..., out).

    Never forms the (out, in) matrix ``B A``: two thin products cost r · (in + out) per token instead.
    """
    _check_shapes(x, lora_A, lora_B, scaling)
    down = x @ lora_A.T              # (..., r): project into the rank-r space
    return scaling * (down @ lora_B.T)  # (..., out)


def lora_linear(x: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor, lora_B: Tensor,
                scaling: float) -> Tensor:
    """The LoRA forward pass as a function: ``x W^T + b + scaling · (x A^T) B^T``.

    x (..., in), weight (out, in), bias (out,) or None, lora_A (r, in), lora_B (out, r) -> (..., out).
    """
    _check_shapes(x, lora_A, lora_B, scaling)
    out, n_in = lora_B.shape[0], x.shape[-1]
    if tensor("weight", weight).shape != (out, n_in) or (bias is not None and tensor("bias", bias).shape != (out,)):
        raise CourseInputError(f"weight must have shape (out, in) = {(out, n_in)} and bias ({out},) or None, as lora_B "
                               f"and x say; got weight {tuple(weight.shape)}, bias "
                               f"{None if bias is None else tuple(bias.shape)}")
    return torch.nn.functional.linear(x, weight, bias) + lora_update(x, lora_A, lora_B, scaling)  # (..., out)


def _check_shapes(x, lora_A, lora_B, scaling) -> None:
    tensor("x", x), tensor("lora_A", lora_A, dim=2), tensor("lora_B", lora_B, dim=2), number("scaling", scaling)
    if x.dim() == 0 or lora_A.shape[1] != x.shape[-1] or lora_B.shape[1] != lora_A.shape[0]:
        raise CourseInputError(f"shapes must chain as x (..., in), lora_A (r, in), lora_B (out, r); got x "
                               f"{tuple(x.shape)}, lora_A {tuple(lora_A.shape)}, lora_B {tuple(lora_B.shape)}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``self.base``) plus the trainable low-rank update ``(alpha / r) · B A``."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise CourseInputError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_settings({"base": base}, r, alpha, dropout)
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)  # the pretrained weight and bias stay as they are
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))  # (out, r): ΔW = 0 at the start
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """``ΔW = (alpha / r) · B A``, shape (out, in): what merging adds to the frozen weight."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: Tensor) -> Tensor:
        if tensor("x", x).dim() == 0 or x.shape[-1] != self.in_features:
            raise CourseInputError(f"expected input of shape (..., {self.in_features}), got {tuple(x.shape)}")
        # dropout acts on the update's input only; the frozen path sees x unchanged (as in peft). Adapters may be
        # kept in float32 on a bf16 base (peft's default): the update runs in their dtype, the sum in the base's.
        frozen = self.base(x)                                                                       # (..., out)
        update = lora_update(self.dropout(x).to(self.lora_A.dtype), self.lora_A, self.lora_B, self.scaling)
        return frozen + update.to(frozen.dtype)                                                     # (..., out)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is ``W + ΔW``: same outputs (in eval mode), no extra cost per token.

        The LoRA layer itself is left unchanged, so merging twice never adds the update twice.
        """
        merged = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        merged.weight.copy_(self.base.weight + self.delta_weight().to(self.base.weight.dtype))  # (out, in)
        if self.base.bias is not None:
            merged.bias.copy_(self.base.bias)
        return merged.requires_grad_(self.base.weight.requires_grad)  # frozen, like the layer it replaces

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


def _check_settings(layers: dict[str, nn.Linear], r, alpha, dropout) -> None:
    """The checks of LoRALinear's settings, also run by apply_lora on every layer before it changes anything."""
    positive_int("r", r), number("alpha", alpha, 0, low_open=True), number("dropout", dropout, 0, 1, high_open=True)
    small = [f"{name} ({m.out_features} x {m.in_features})" for name, m in layers.items()
             if r > min(m.in_features, m.out_features)]
    if small:
        raise CourseInputError(f"rank r={r} is larger than the layer itself: {', '.join(small)}; a low-rank update "
                               "needs r <= min(in_features, out_features)")


# ----------------------------------------------------------------------------------------------- models
def matches(name: str, targets: Iterable[str] | str) -> bool:
    """Does module ``name`` (e.g. ``bert.encoder.layer.0.attention.self.query``) match one of ``targets``?

    A target matches the whole name or its last dotted parts (``"query"``, ``"self.query"``), as in peft.
    """
    if not isinstance(name, str):
        raise CourseInputError(f"name must be a module name (a str), got {name!r}")
    targets = names("targets", targets, allow_empty=True)
    return any(name == target or name.endswith("." + target) for target in targets)


def _module(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise CourseInputError(f"model must be a torch nn.Module, got {type(model).__name__}")
    return model


def apply_lora(model: nn.Module, target_modules: Iterable[str] | str = ("query", "value"), r: int = 8,
               alpha: float = 16.0, dropout: float = 0.0, trainable_modules: Iterable[str] = ()) -> nn.Module:
    """Freeze ``model`` and replace every ``nn.Linear`` named in ``target_modules`` by a :class:`LoRALinear`.

    ``trainable_modules`` (say ``("classifier",)`` for a fresh task head) stay fully trainable. Changes the
    model in place and returns it. Every argument and every chosen layer is checked first, so a call that
    raises leaves the model as it was.
    """
    modules = [name for name, _ in _module(model).named_modules() if name]
    targets = names("target_modules", target_modules)
    keep = names("trainable_modules", trainable_modules, allow_empty=True)
    missing = [t for t in targets if not any(matches(name, t) for name in modules)]
    if missing:
        raise CourseInputError(f"none of the target modules {missing} is in {type(model).__name__}; "
                               f"its linear layers end in: {sorted(_suffixes(model, nn.Linear))}")
    chosen = [(name, module) for name, module in model.named_modules() if name and matches(name, targets)]
    wrong = [f"{name} ({type(module).__name__})" for name, module in chosen if not isinstance(module, nn.Linear)]
    if wrong:
        raise CourseInputError(f"LoRA here wraps nn.Linear layers only; these targets are not: {', '.join(wrong)}")
    _check_settings(dict(chosen), r, alpha, dropout)
    unknown = [t for t in keep if not any(matches(name, t) for name in modules)]
    if unknown:
        raise CourseInputError(f"trainable_modules {unknown} match no module of {type(model).__name__}; "
                               f"pick from the module names: {sorted(_suffixes(model, nn.Module))}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, r=r, alpha=alpha, dropout=dropout))
    for name, module in model.named_modules():
        if name and matches(name, keep):
            for parameter in module.parameters():
                parameter.requires_grad_(True)
    return model


def _suffixes(model: nn.Module, kind: type) -> set[str]:
    return {name.rpartition(".")[2] for name, module in model.named_modules() if name and isinstance(module, kind)}


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every :class:`LoRALinear` of the model, by name."""
    return {name: module for name, module in _module(model).named_modules() if isinstance(module, LoRALinear)}


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace each :class:`LoRALinear` by its merged ``nn.Linear`` (in place); returns the model."""
    layers = lora_layers(model)
    if not layers:
        raise CourseInputError(f"{type(model).__name__} has no LoRALinear layers to merge (call apply_lora first)")
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.merge())
    return model


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Parameters LoRA adds to one (out, in) linear layer: A has r · in, B has out · r."""
    positive_int("in_features", in_features), positive_int("out_features", out_features), positive_int("r", r)
    return r * (in_features + out_features)
