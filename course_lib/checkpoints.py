"""Where pretrained weights come from: a folder, a ``transformers`` model in memory, or a state dict.

The course's loaders (:func:`course_lib.encoder.load_pretrained_encoder`, :func:`course_lib.gpt.load_gpt2`,
:func:`course_lib.llama.load_pretrained_decoder`) all start here: :func:`read_checkpoint` turns what the user
has into one pair, the model's ``config.json`` as a dict and its weights by ``transformers``' names. The
rename tables that follow live with each model.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from course_lib.runtime.errors import CourseInputError

__all__ = ["read_checkpoint", "split_prefix"]


def _config_dict(config) -> dict:
    if isinstance(config, Mapping):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    raise CourseInputError(f"config must be the model's config.json as a dict (or a transformers config), "
                           f"got {type(config).__name__}")


def read_checkpoint(source, config=None) -> tuple[dict, dict[str, Tensor]]:
    """``(config as a dict, {name: tensor})`` from ``source``:

    * a folder (``str`` or ``Path``) holding ``config.json`` and ``model.safetensors``;
    * a ``transformers`` model in memory (anything with ``.config`` and ``.state_dict()``);
    * a state dict (``{name: tensor}``), with ``config`` given: its ``config.json`` as a dict, or a config object.
    """
    if isinstance(source, (str, Path)):
        from safetensors.torch import load_file

        path = Path(source).expanduser()
        if path.is_file():
            raise CourseInputError(f"expected a model folder (config.json + model.safetensors), got the file {path}")
        for name in ("config.json", "model.safetensors"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"expected a model folder with config.json and model.safetensors; "
                                        f"{path / name} does not exist")
        return json.loads((path / "config.json").read_text()), load_file(str(path / "model.safetensors"))
    if isinstance(source, nn.Module):
        if not hasattr(source, "config"):
            raise CourseInputError(f"{type(source).__name__} has no .config: pass a transformers model, a folder, "
                                   "or its state dict with config=")
        return _config_dict(source.config), dict(source.state_dict())
    if isinstance(source, Mapping):
        if config is None:
            raise CourseInputError("a state dict carries no sizes: pass its config too (config=the model's "
                                   "config.json as a dict, or model.config)")
        if not all(isinstance(value, Tensor) for value in source.values()):
            raise CourseInputError("a state dict must map parameter names to tensors")
        return _config_dict(config), dict(source)
    raise CourseInputError(f"expected a model folder, a transformers model or a state dict, got "
                           f"{type(source).__name__}")


def split_prefix(state: dict[str, Tensor], prefix: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(body, rest)``: the weights under ``prefix`` (e.g. ``"bert."``) without it, and every other weight.

    A model with a task head saves its body under a prefix and the head beside it; a bare body has no prefix,
    and then everything is body.
    """
    if not any(name.startswith(prefix) for name in state):
        return dict(state), {}
    body = {name.removeprefix(prefix): t for name, t in state.items() if name.startswith(prefix)}
    return body, {name: t for name, t in state.items() if not name.startswith(prefix)}
