"""BertViz's head view and model view for a model and a text, offline and reproducible.

Same pictures as ``bertviz.head_view`` / ``bertviz.model_view``, but the model is run for you, the
JavaScript is inlined (no CDN), ids are deterministic and the weights are rounded (``decimals=3``).
"""
from __future__ import annotations

import html

from course_lib.viz.attention_data import (
    MAX_TOKENS, AttentionRun, check_index, check_indices, display_tokens, model_size, rounded, run_attention,
)
from course_lib.viz.page import AttentionView, check_mode, compact_numbers

PAIR_FILTERS = (  # (name, rows, columns) as BertViz names them; "a" = first text, "b" = second text
    ("Sentence A -> Sentence A", "a", "a"),
    ("Sentence B -> Sentence B", "b", "b"),
    ("Sentence A -> Sentence B", "a", "b"),
    ("Sentence B -> Sentence A", "b", "a"),
)


def pair_slices(num_tokens: int, sentence_b_start: int | None, keys=(1, 2, 3, 4), of: int | str = 0) -> list[dict]:
    """The sentence-pair filters as token ranges; the browser cuts them out of the full attention ``of``."""
    if sentence_b_start is None:
        return []
    spans = {"a": [0, sentence_b_start], "b": [sentence_b_start, num_tokens]}
    return [{"key": key, "of": of, "name": name, "rows": spans[rows], "cols": spans[cols]}
            for key, (name, rows, cols) in zip(keys, PAIR_FILTERS)]


def _filter_select(run: AttentionRun) -> str:
    if run.sentence_b_start is None:
        return ""
    names = ["All"] + [name for name, _, _ in PAIR_FILTERS]
    options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(names))
    return f' <label>Attention: <select id="filter">{options}</select></label>'


def _attention_entries(run: AttentionRun, layers: list[int], heads: list[int], decimals: int) -> list[dict]:
    tokens = display_tokens(run.tokens)
    weights = run.attentions[layers][:, heads]  # (L', H', T, T)
    return [{"name": "All" if run.sentence_b_start is not None else None,
             "attn": compact_numbers(rounded(weights, decimals)), "left_text": tokens, "right_text": tokens}]


def _describe(kind: str, run: AttentionRun, layers: list[int], heads: list[int]) -> str:
    pair = ", a sentence pair" if run.sentence_b_start is not None else ""
    return (f"Attention {kind} view of {len(run.tokens)} tokens{pair} "
            f"({run.model_name}, {len(layers)} layers \u00d7 {len(heads)} heads)")


def head_view(model, tokenizer, text: str, text_pair: str | None = None, layer: int | None = None,
              heads: list[int] | None = None, layers: list[int] | None = None, mode: str = "light",
              decimals: int = 3, max_tokens: int = MAX_TOKENS) -> AttentionView:
    """BertViz head view: lines from each token to the tokens it attends to, one colour per head.

    layer: the layer shown first (a drop-down switches); heads: the heads selected at first (default all);
    layers: the layers to include (default all); text_pair adds BertViz's sentence A/B filters.
    """
    check_mode(mode)
    num_layers, num_heads = model_size(model)
    layers = check_indices("layers", layers, num_layers, "layers") or list(range(num_layers))
    if layer is not None:
        check_index("layer", layer, num_layers, "layers")
        if layer not in layers:
            raise ValueError(f"layer={layer} is not among the included layers={layers}")
    heads = check_indices("heads", heads, num_heads, "heads")
    run = run_attention(model, tokenizer, text, text_pair, max_tokens)
    data = {
        "attention": _attention_entries(run, layers, list(range(run.num_heads)), decimals),
        "slices": pair_slices(len(run.tokens), run.sentence_b_start),
        "default_filter": "0",
        "layer": layer,
        "heads": heads,
        "include_layers": layers,
    }
    body = ('<span style="user-select:none"><label>Layer: <select id="layer"></select></label>'
            f'{_filter_select(run)}</span><div id="vis"></div>')
    return AttentionView("head", "head_view.js", data, body,
                         _describe("head", run, layers, list(range(run.num_heads))), mode)


def model_view(model, tokenizer, text: str, text_pair: str | None = None, layers: list[int] | None = None,
               heads: list[int] | None = None, mode: str = "light", decimals: int = 3,
               max_tokens: int = MAX_TOKENS) -> AttentionView:
    """BertViz model view: a thumbnail per layer and head; click one to see its attention in detail.

    layers / heads: which layers and heads to include (default all); text_pair adds the sentence filters.
    """
    check_mode(mode)
    num_layers, num_heads = model_size(model)
    layers = check_indices("layers", layers, num_layers, "layers") or list(range(num_layers))
    heads = check_indices("heads", heads, num_heads, "heads") or list(range(num_heads))
    run = run_attention(model, tokenizer, text, text_pair, max_tokens)
    data = {
        "attention": _attention_entries(run, layers, heads, decimals),
        "slices": pair_slices(len(run.tokens), run.sentence_b_start),
        "default_filter": "0",
        "display_mode": mode,
        "include_layers": layers,
        "include_heads": heads,
        "total_heads": run.num_heads,  # as BertViz: thumbnails keep their size when heads are left out
    }
    body = f'<span style="user-select:none">{_filter_select(run).strip()}</span><div id="vis"></div>'
    return AttentionView("model", "model_view.js", data, body, _describe("model", run, layers, heads), mode)
