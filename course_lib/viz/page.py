"""The HTML of one attention view: a placeholder, the view's data as JSON, and the script that draws it.

The markup is a pure function of the view's content, so two runs give byte-identical HTML (nbval can compare
it). The element id is ``cv-<kind>-<12 hex digits of a SHA-256 over the content>``: different texts, models,
options or modes get different ids; the *same* view displayed twice on one page gets the suffix ``-2``,
``-3``, ... from its script in the browser (see ``scripts._LOADER``), so the stored HTML stays identical
while every copy still draws into its own element.

Without JavaScript (a notebook opened untrusted in JupyterLab, a print preview) only the placeholder shows:
"... Run this cell to show the interactive view." The controls are inserted by the script itself, so there
is never an empty box or a dead drop-down.
"""
from __future__ import annotations

import hashlib
import html
from pathlib import Path

from course_lib.viz.scripts import json_for_html, view_script

RUN_CELL_MESSAGE = "Run this cell to show the interactive view."
MODES = ("light", "dark")
_FONT = "font-family:'Helvetica Neue', Helvetica, Arial, sans-serif"
_COLORS = {"light": "background:white;color:black", "dark": "background:black;color:#ccc"}
# Dark mode for the parts of BertViz's drawings that have no mode of their own (CSS beats SVG attributes).
_DARK_CSS = (
    "<style>.course-viz-dark svg text{fill:#ccc}.course-viz-dark rect.background{fill:#444}"
    ".course-viz-dark select{background:#222;color:#ddd;border:1px solid #555}</style>"
)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'light' or 'dark', got {mode!r}")
    return mode


def compact_numbers(values):
    """Nested lists with whole floats written as integers (``0.0`` -> ``0``), to keep the JSON short."""
    if isinstance(values, list):
        return [compact_numbers(v) for v in values]
    if isinstance(values, float) and values.is_integer():
        return int(values)
    return values


class AttentionView:
    """An interactive attention view: it shows itself in Jupyter and ``save(path)`` writes a standalone page."""

    def __init__(self, kind: str, bertviz_file: str, data: dict, body_html: str, title: str, mode: str):
        self.kind = kind  # "head", "model" or "neuron"
        self.title = title
        self.mode = check_mode(mode)
        content = json_for_html([kind, bertviz_file, data, body_html, mode])
        self.id = f"cv-{kind}-{hashlib.sha256(content.encode('ascii')).hexdigest()[:12]}"
        self.data = {**data, "root_div_id": self.id}  # BertViz's parameters (before the pair slices are cut)
        placeholder = (
            f'<div class="course-viz-placeholder" style="padding:10px 14px;border:1px dashed #999;'
            f'border-radius:4px;color:#555;background:#fafafa;{_FONT};font-size:14px">'
            f"{html.escape(title)}. {RUN_CELL_MESSAGE}</div>"
        )
        body = (_DARK_CSS if mode == "dark" else "") + body_html
        self.html = (
            f'<div class="course-viz course-viz-{mode}" id="{self.id}" data-view="{kind}" '
            f'style="{_FONT};{_COLORS[mode]};padding:6px;overflow-x:auto">\n'
            f"{placeholder}\n"
            f'<script type="application/json" class="course-viz-data">{json_for_html(self.data)}</script>\n'
            f"<script>\n{view_script(bertviz_file, self.id, body)}</script>\n"
            "</div>\n"
        )

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:  # deterministic: notebooks store it next to the HTML
        return f"<{self.title}; shows in Jupyter, or .save('view.html')>"

    def page(self) -> str:
        """A standalone HTML document with this view (works offline)."""
        return page_html([self], title=self.title)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`page` to ``path`` (UTF-8) and return the path."""
        return save_page(path, [self], title=self.title)


def page_html(views: list[AttentionView], title: str = "Attention views") -> str:
    """A standalone HTML document with several views, one after the other."""
    if not views or not all(isinstance(v, AttentionView) for v in views):
        raise TypeError("views must be a non-empty list of attention views (head_view, model_view, neuron_view)")
    body = "\n".join(view.html for view in views)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n</head>\n<body style=\"margin:16px\">\n{body}</body>\n</html>\n"
    )


def save_page(path: str | Path, views: list[AttentionView], title: str = "Attention views") -> Path:
    """Write several views into one standalone HTML file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page_html(list(views), title), encoding="utf-8")
    return path
