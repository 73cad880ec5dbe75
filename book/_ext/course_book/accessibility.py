"""Accessibility repairs of the built pages (WCAG 2.1 AA, as axe-core checks them in tests/test_accessibility.py).

The theme and the toggle extension write a few controls whose accessible name is missing or does not match what
they show; once the site is written (``build-finished``), each page is rewritten here, so the repairs hold without
JavaScript:

* the toggle of a sidebar entry with sub-pages, an empty ``<summary>``, is named after its entry
  ("Pages under For instructors");
* the search buttons lose their ``aria-label="Search"``, which hid the text they show (``Search``, ``Ctrl+K``): their
  name is then that text, or their title;
* the icons of the colour-mode button are hidden from assistive technology and lose their ``title`` ("Light",
  "Dark", "System Settings"): Font Awesome's script turns each ``<i>`` into an ``<svg>`` and its title into an
  SVG ``<title>``, which axe counts as the button's visible text, so it no longer matched the button's name
  ("Color mode");
* a folded cell's ``<summary aria-label="Toggle hidden content">`` is named by what it shows ("Show solution");
* an empty header cell of a table output (the corner above a pandas index) gets a header text for screen readers.
"""
from __future__ import annotations

import html
import re
from pathlib import Path

from sphinx.application import Sphinx

SIDEBAR_TOGGLE = re.compile(r'(<a class="[^"]*reference internal" href="[^"]*">(.*?)</a><details(?: open="open")?>)<summary>')
SEARCH_LABEL = re.compile(r'(<button class="[^"]*search-button__button[^"]*"[^>]*?) aria-label="Search"')
THEME_ICON = re.compile(r'<i class="theme-switch (?![^"]*"[^>]*aria-hidden)')
THEME_ICON_TITLE = re.compile(r'(<i aria-hidden="true" class="theme-switch [^>]*?) title="[^"]*"')
TOGGLE_LABEL = '<summary aria-label="Toggle hidden content">'
EMPTY_HEADER = re.compile(r"<th((?: [^>]*)?)>(?:\s|&nbsp;)*</th>")   # "<th></th>", pandas' '<th class="blank">&nbsp;</th>'
HIDDEN_HEADER = r'<th\1><span class="visually-hidden">(no header)</span></th>'


def _sidebar_toggle(match: re.Match) -> str:
    title = html.unescape(re.sub(r"<[^>]+>", "", match.group(2))).strip()
    return f'{match.group(1)}<summary aria-label="{html.escape(f"Pages under {title}")}">'


def _output_tables(page: str) -> str:
    """Empty header cells filled, only inside the outputs of cells (the theme's own tables are left alone)."""
    parts = re.split(r'(<div class="cell_output[^"]*">)', page)
    return "".join(EMPTY_HEADER.sub(HIDDEN_HEADER, part) if i and i % 2 == 0 else part
                   for i, part in enumerate(parts))


def repair(page: str) -> str:
    """One page's HTML with the repairs of this module's docstring."""
    page = SIDEBAR_TOGGLE.sub(_sidebar_toggle, page)
    page = SEARCH_LABEL.sub(r"\1", page)
    page = THEME_ICON.sub('<i aria-hidden="true" class="theme-switch ', page)
    page = THEME_ICON_TITLE.sub(r"\1", page)
    page = page.replace(TOGGLE_LABEL, "<summary>")
    return _output_tables(page)


def repair_pages(app: Sphinx, exception: Exception | None) -> None:
    """``build-finished``: apply :func:`repair` to every HTML page written."""
    if exception is not None or app.builder.format != "html":
        return
    for path in Path(app.outdir).rglob("*.html"):
        if "_static" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        fixed = repair(text)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")
