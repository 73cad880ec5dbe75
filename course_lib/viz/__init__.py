"""Attention views that work offline and reproducibly: BertViz's head, model and neuron views, and a heatmap.

>>> view = head_view(model, tokenizer, "The cat sat.", "It was tired.")   # shows in Jupyter
>>> view.save("head_view.html")                                          # a standalone page

Each view inlines its JavaScript (no CDN), has an id derived from its content (identical HTML from run to
run) and rounds weights to 3 decimals. Untrusted notebooks show "Run this cell to show the interactive view."
"""
from course_lib.viz.attention_data import MAX_TOKENS, AttentionRun, run_attention
from course_lib.viz.bertviz_views import head_view, model_view
from course_lib.viz.heatmap import attention_heatmap
from course_lib.viz.neuron import neuron_view
from course_lib.viz.page import RUN_CELL_MESSAGE, AttentionView, page_html, save_page
from course_lib.viz.scripts import ViewScriptError

__all__ = [
    "MAX_TOKENS", "RUN_CELL_MESSAGE", "AttentionRun", "AttentionView", "ViewScriptError", "attention_heatmap",
    "head_view", "model_view", "neuron_view", "page_html", "run_attention", "save_page",
]
