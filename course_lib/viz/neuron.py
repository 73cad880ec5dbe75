"""BertViz's neuron view for a BERT-style encoder: queries, keys, q × k, q · k and the softmax.

The queries and keys are read from the model's own projections (forward hooks on each layer's ``query``
and ``key`` linear layers), the weights are recomputed with :func:`course_lib.attention.scaled_dot_product_attention`
and checked against the weights the model returns, and BertViz's neuron_view.js draws them. This replaces
BertViz's route through its bundled 2019 copy of transformers (which needs a ``pytorch_model.bin`` folder).
"""
from __future__ import annotations

import html

import torch

from course_lib.attention import scaled_dot_product_attention
from course_lib.viz.attention_data import (
    MAX_TOKENS, check_index, check_indices, display_tokens, model_size, rounded, run_attention,
)
from course_lib.viz.bertviz_views import PAIR_FILTERS, pair_slices
from course_lib.viz.page import AttentionView, check_mode, compact_numbers

_NEURON_FILTER_KEYS = ("aa", "bb", "ab", "ba")  # the option values of neuron_view.js, in PAIR_FILTERS order


def _self_attention_modules(model) -> list:
    """Each layer's self-attention module (with ``query`` and ``key`` linear layers) of a BERT-style encoder."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    modules = [getattr(getattr(layer, "attention", None), "self", None) for layer in (layers or [])]
    if not modules or not all(hasattr(m, "query") and hasattr(m, "key") for m in modules):
        raise TypeError(
            f"neuron_view needs a BERT-style encoder (encoder.layer[i].attention.self.query/key), got "
            f"{type(model).__name__}. Use head_view or model_view for other models."
        )
    return modules


def queries_and_keys(model, tokenizer, text: str, text_pair: str | None = None, max_tokens: int = MAX_TOKENS):
    """Run the encoder once; return ``(run, queries, keys)`` with queries and keys of shape (L, H, T, d)."""
    modules = _self_attention_modules(model)
    num_heads = model.config.num_attention_heads
    captured: dict[str, list[torch.Tensor]] = {"query": [], "key": []}

    def keep(name):
        def hook(module, inputs, output):  # output: (1, T, D)
            captured[name].append(output[0].detach().double().cpu())
        return hook

    handles = [getattr(m, name).register_forward_hook(keep(name)) for m in modules for name in captured]
    try:
        run = run_attention(model, tokenizer, text, text_pair, max_tokens)
    finally:
        for handle in handles:
            handle.remove()

    def heads(outputs):  # L x (T, D) -> (L, H, T, d)
        stacked = torch.stack(outputs)  # (L, T, D)
        L, T, D = stacked.shape
        return stacked.view(L, T, num_heads, D // num_heads).transpose(1, 2)

    queries, keys = heads(captured["query"]), heads(captured["key"])  # (L, H, T, d)
    _, weights = scaled_dot_product_attention(queries, keys, keys)  # (L, H, T, T)
    if not torch.allclose(weights, run.attentions, atol=1e-4):
        raise ValueError(
            f"{type(model).__name__}: softmax(q k^T / sqrt(d)) of the query/key projections does not give the "
            "model's attention weights, so the neuron view would be wrong for this model."
        )
    return run, queries, keys


def neuron_view(model, tokenizer, text: str, text_pair: str | None = None, layer: int = 0, head: int = 0,
                layers: list[int] | None = None, mode: str = "light", decimals: int = 3, vector_decimals: int = 2,
                max_tokens: int = MAX_TOKENS) -> AttentionView:
    """BertViz neuron view of a BERT-style encoder: hover a token to see how its query meets every key.

    layer / head: shown first (drop-downs switch); layers: the layers to include (default all; queries and
    keys make this view several times larger than the head view). Click the "+" next to a token to expand q × k.
    Weights are rounded to ``decimals``, query and key elements to ``vector_decimals``.
    """
    check_mode(mode)
    num_layers, num_heads = model_size(model)
    check_index("layer", layer, num_layers, "layers")
    head = check_index("head", head, num_heads, "heads")
    layers = check_indices("layers", layers, num_layers, "layers") or list(range(num_layers))
    if layer not in layers:
        raise ValueError(f"layer={layer} is not among the included layers={layers}")
    run, queries, keys = queries_and_keys(model, tokenizer, text, text_pair, max_tokens)
    tokens = display_tokens(run.tokens)
    data = {
        "attention": {"all": {
            "attn": compact_numbers(rounded(run.attentions[layers], decimals)),  # (L', H, T, T)
            "left_text": tokens,
            "right_text": tokens,
            "queries": compact_numbers(rounded(queries[layers], vector_decimals)),  # (L', H, T, d)
            "keys": compact_numbers(rounded(keys[layers], vector_decimals)),  # (L', H, T, d)
        }},
        "layer_labels": layers,  # neuron_view.js numbers its layer drop-down 0, 1, ...; the loader relabels it
        "slices": pair_slices(len(tokens), run.sentence_b_start, keys=_NEURON_FILTER_KEYS, of="all"),
        "default_filter": "all",
        "bidirectional": True,
        "display_mode": mode,
        "layer": layers.index(layer),  # an index into the included layers
        "head": head,
    }
    select = ""
    if run.sentence_b_start is not None:
        options = [("all", "All")] + sorted(zip(_NEURON_FILTER_KEYS, (n for n, _, _ in PAIR_FILTERS)))
        select = ('<label><span class="dropdown-label"> Attention: </span><select id="filter">'
                  + "".join(f'<option value="{k}">{html.escape(n)}</option>' for k, n in options) + "</select></label>")
    body = ('<span style="user-select:none"><label><span class="dropdown-label">Layer: </span><select id="layer">'
            '</select></label> <label><span class="dropdown-label">Head: </span><select id="att_head"></select></label>'
            f"{select}</span><div id=\"vis\"></div>")
    title = (f"Attention neuron view of {len(tokens)} tokens"
             f"{', a sentence pair' if run.sentence_b_start is not None else ''} "
             f"({run.model_name}, {len(layers)} layers \u00d7 {run.num_heads} heads)")
    return AttentionView("neuron", "neuron_view.js", data, body, title, mode)
