"""The attention views in a real browser (Debian's Chromium, headless) with the network cut off.

Every request to anything but the page's own file or local server is aborted and recorded, and so is every
console error; either fails the test. What the views draw is compared with the weights (and queries and keys)
of the real ``transformers`` encoder, so a view that renders the wrong numbers fails too.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from playwright.sync_api import expect

from course_lib.viz import RUN_CELL_MESSAGE, head_view, model_view, neuron_view, save_page

pytestmark = pytest.mark.browser

TEXT, PAIR = "The cat sat on the mat.", "It was very tired today."
TIMEOUT_MS = 60_000  # generous: CI machines are small and busy; every wait below ends as soon as it can
expect.set_options(timeout=TIMEOUT_MS)


@contextlib.contextmanager
def offline_page(browser, url: str, allowed: tuple[str, ...] = ("file://",), javascript: bool = True,
                 expect_problems: bool = False):
    """A page whose requests outside ``allowed`` are aborted; yields ``(page, problems)``.

    ``problems`` lists every blocked request and console error; it must be empty at the end unless
    ``expect_problems`` (the caller then checks it).
    """
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []

    def guard(route):
        if route.request.url.startswith(allowed + ("data:",)):
            route.continue_()
        else:
            problems.append(f"external request: {route.request.url}")
            route.abort()

    page.route("**/*", guard)
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    try:
        page.goto(url)
        yield page, problems
        if not expect_problems:
            assert problems == []
    finally:
        context.close()


def attribute_numbers(page, selector: str, attribute: str) -> torch.Tensor:
    values = page.eval_on_selector_all(selector, f"els => els.map(e => +e.getAttribute('{attribute}'))")
    return torch.tensor(values, dtype=torch.float64)


@pytest.fixture(scope="module")
def pair(tokenizer):
    encoding = tokenizer(TEXT, PAIR, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0].tolist())
    return encoding, tokens, encoding["token_type_ids"][0].tolist().index(1)


@pytest.fixture(scope="module")
def weights(hf_encoder, pair):
    """transformers' attention weights for the pair: (L, H, T, T)."""
    with torch.no_grad():
        output = hf_encoder(**pair[0], output_attentions=True)
    return torch.stack([a[0] for a in output.attentions]).double()


# ----------------------------------------------------------------------------------------------- views
def test_head_view_draws_the_models_weights_and_follows_layer_head_and_filter(browser, hf_encoder, tokenizer, pair,
                                                                               weights, tmp_path):
    encoding, tokens, b_start = pair
    T, H = len(tokens), weights.shape[1]
    view = head_view(hf_encoder, tokenizer, TEXT, PAIR)
    with offline_page(browser, view.save(tmp_path / "head.html").as_uri()) as (page, _):
        root = f"#{view.id}"
        expect(page.locator(f"{root} svg #left text")).to_have_count(T)
        assert page.locator(f"{root} svg #left text").all_text_contents() == tokens
        assert page.locator(f"{root} svg #right text").all_text_contents() == tokens
        expect(page.locator(f"{root} .course-viz-placeholder")).to_have_count(0)

        lines = f"{root} svg #attention line"  # one per head, query token, key token; opacity = weight / heads
        opacity = attribute_numbers(page, lines, "stroke-opacity").view(H, T, T)
        torch.testing.assert_close(opacity, weights[0] / H, atol=0.0005 / H + 1e-9, rtol=0)

        page.select_option(f"{root} #layer", "3")
        opacity = attribute_numbers(page, lines, "stroke-opacity").view(H, T, T)
        torch.testing.assert_close(opacity, weights[3] / H, atol=0.0005 / H + 1e-9, rtol=0)

        page.locator(f"{root} svg > g:last-child > rect").nth(2).dblclick()  # keep head 2 only
        opacity = attribute_numbers(page, lines, "stroke-opacity").view(H, T, T)
        torch.testing.assert_close(opacity[2], weights[3, 2], atol=0.0005 + 1e-9, rtol=0)
        assert opacity[[h for h in range(H) if h != 2]].abs().sum() == 0

        page.locator(f"{root} svg #left text").nth(2).hover()  # only the lines of token 2 stay visible
        expect(page.locator(f"{root} svg #attention line[visibility='visible']")).to_have_count(H * T)
        assert set(page.eval_on_selector_all(f"{root} svg #attention line[visibility='visible']",
                                             "els => els.map(e => e.getAttribute('left-token-index'))")) == {"2"}

        page.select_option(f"{root} #filter", label="Sentence A -> Sentence B")  # cut in the browser
        expect(page.locator(f"{root} svg #left text")).to_have_count(b_start)
        assert page.locator(f"{root} svg #right text").all_text_contents() == tokens[b_start:]
        opacity = attribute_numbers(page, lines, "stroke-opacity").view(H, b_start, T - b_start)
        torch.testing.assert_close(opacity[2], weights[3, 2, :b_start, b_start:], atol=0.0005 + 1e-9, rtol=0)


def test_model_view_draws_every_head_and_opens_one_in_detail(browser, hf_encoder, tokenizer, pair, weights, tmp_path):
    _, tokens, _ = pair
    L, H = weights.shape[:2]
    view = model_view(hf_encoder, tokenizer, TEXT, PAIR, mode="dark")
    with offline_page(browser, view.save(tmp_path / "model.html").as_uri()) as (page, _):
        root = f"#{view.id}"
        expect(page.locator(f"{root} .attn_background")).to_have_count(L * H)
        # Dark mode: BertViz writes its axis labels in black; the view's style turns them light.
        label = page.locator(f"{root} svg text", has_text="Heads")
        assert label.evaluate("e => getComputedStyle(e).fill") == "rgb(204, 204, 204)"

        page.locator(f"{root} #attn_background_1_2 ~ rect").click()  # the thumbnail's transparent click area
        details = page.locator(f"{root} .detail text.token")
        expect(details).to_have_count(2 * len(tokens))
        assert details.all_text_contents() == tokens + tokens
        assert page.locator(f"{root} text.detail").text_content() == "Layer 1, Head 2"
        opacity = attribute_numbers(page, f"{root} .attn-line-group line", "stroke-opacity")
        torch.testing.assert_close(opacity.view(len(tokens), -1), weights[1, 2], atol=0.0005 + 1e-9, rtol=0)


# The content column of a lesson page on the course website at a 1280 px and a 1920 px wide window.
BOOK_COLUMNS = {1280: 688, 1920: 790}


@pytest.mark.parametrize("window", sorted(BOOK_COLUMNS))
def test_model_view_fits_the_width_of_a_page_column_and_every_control_has_a_label(browser, hf_encoder, tokenizer,
                                                                                  window, tmp_path):
    view = model_view(hf_encoder, tokenizer, TEXT, PAIR)
    thumbnails_drawn = hf_encoder.config.num_hidden_layers * hf_encoder.config.num_attention_heads
    column = BOOK_COLUMNS[window]
    path = tmp_path / "column.html"
    path.write_text(view.page().replace('<body style="margin:16px">',
                                        f'<body style="margin:16px"><div style="width:{column}px">'), encoding="utf-8")
    with offline_page(browser, path.as_uri()) as (page, _):
        page.set_viewport_size({"width": window, "height": 900})
        root = f"#{view.id}"
        expect(page.locator(f"{root} .attn_background")).to_have_count(thumbnails_drawn)
        box = page.locator(root).bounding_box()
        svg = page.locator(f"{root} svg").first.bounding_box()
        assert svg["x"] + svg["width"] <= box["x"] + box["width"] + 0.5, f"the drawing ({svg}) overflows {box}"
        thumbnails = page.eval_on_selector_all(f"{root} .attn_background",
                                               "els => els.map(e => e.getBoundingClientRect().right)")
        assert max(thumbnails) <= box["x"] + box["width"], "a head's thumbnail is out of view"
        natural = float(page.locator(f"{root} svg").first.get_attribute("width"))
        assert svg["width"] >= 0.6 * natural, "scaled down too far"
        assert page.eval_on_selector(root, "e => e.scrollWidth <= e.clientWidth + 1"), "the view scrolls sideways"
        unlabelled = page.eval_on_selector_all("select", "els => els.filter(e => !e.labels.length).length")
        assert unlabelled == 0
    wide = view.save(tmp_path / "wide.html")  # a wide window: drawn at its natural size, never scaled up
    with offline_page(browser, wide.as_uri()) as (page, _):
        page.set_viewport_size({"width": 1920, "height": 900})
        expect(page.locator(f"#{view.id} .attn_background")).to_have_count(thumbnails_drawn)
        svg = page.locator(f"#{view.id} svg").first
        assert abs(svg.bounding_box()["width"] - float(svg.get_attribute("width"))) < 1


def test_head_and_neuron_view_controls_have_labels(browser, hf_encoder, tokenizer, tmp_path):
    views = [head_view(hf_encoder, tokenizer, TEXT, PAIR), neuron_view(hf_encoder, tokenizer, TEXT, PAIR)]
    with offline_page(browser, save_page(tmp_path / "both.html", views).as_uri()) as (page, _):
        for view in views:
            expect(page.locator(f"#{view.id} select#layer")).to_have_count(1)
        names = page.eval_on_selector_all("select", "els => els.map(e => e.labels.length ? e.labels[0].innerText : '')")
        assert len(names) == 5 and all(name.strip() for name in names), names


def test_neuron_view_shows_query_times_key_for_the_hovered_token(browser, hf_encoder, tokenizer, tmp_path):
    layer, head, token = 2, 5, 3
    encoding = tokenizer(TEXT, return_tensors="pt")
    tokens = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0].tolist())
    with torch.no_grad():  # the peer: the encoder's own query and key projections of layer 2
        output = hf_encoder(**encoding, output_hidden_states=True, output_attentions=True)
        attention = hf_encoder.encoder.layer[layer].attention.self
        hidden = output.hidden_states[layer][0]  # (T, 384)
        query = attention.query(hidden).view(len(tokens), 12, 32)[:, head]  # (T, d)
        key = attention.key(hidden).view(len(tokens), 12, 32)[:, head]
    scores = (key @ query[token]).double() / 32 ** 0.5  # (T,) q . k / sqrt(d) for every key

    view = neuron_view(hf_encoder, tokenizer, TEXT, layer=layer, layers=[1, layer])
    with offline_page(browser, view.save(tmp_path / "neuron.html").as_uri()) as (page, _):
        root = f"#{view.id}"
        left = page.locator(f"{root} #collapsed #leftText > g")
        expect(left).to_have_count(len(tokens))
        assert page.locator(f"{root} #collapsed #leftText text").all_text_contents() == tokens
        assert page.locator(f"{root} #layer option").all_text_contents() == ["1", str(layer)]  # real layer numbers
        assert page.locator(f"{root} #layer option:checked").text_content() == str(layer)
        page.select_option(f"{root} #att_head", str(head))

        left.nth(token).hover()
        line_opacity = attribute_numbers(page, f"{root} #collapsed .attn-line-group line", "stroke-opacity")
        torch.testing.assert_close(line_opacity.view(len(tokens), -1)[token],
                                   output.attentions[layer][0, head, token].double(), atol=0.0005 + 1e-9, rtol=0)

        left.nth(token).locator("rect").last.click()  # the "+" that expands the computation
        expect(page.locator(f"{root} #expanded")).to_have_attribute("visibility", "visible")
        shown = attribute_numbers(page, f"{root} #expanded .dotproduct", "data-value")
        torch.testing.assert_close(shown, scores, atol=0.1, rtol=0)  # from q and k rounded to 2 decimals
        assert shown.argmax() == scores.argmax()


def test_several_views_on_one_page_each_draw_into_their_own_element(browser, hf_encoder, tokenizer, tmp_path):
    head = head_view(hf_encoder, tokenizer, TEXT)
    views = [head, head, head_view(hf_encoder, tokenizer, PAIR), model_view(hf_encoder, tokenizer, PAIR),
             neuron_view(hf_encoder, tokenizer, TEXT), neuron_view(hf_encoder, tokenizer, PAIR)]
    path = save_page(tmp_path / "views.html", views)
    with offline_page(browser, path.as_uri()) as (page, _):
        expect(page.locator(".course-viz svg")).to_have_count(len(views))
        expect(page.locator(".course-viz-placeholder")).to_have_count(0)
        ids = page.eval_on_selector_all(".course-viz", "els => els.map(e => e.id)")
        assert ids == [head.id, f"{head.id}-2"] + [v.id for v in views[2:]]  # the repeated view got a suffix

        first, copy = f"#{head.id} svg #attention line", f"#{head.id}-2 svg #attention line"
        before = attribute_numbers(page, first, "stroke-opacity")
        page.select_option(f"#{head.id}-2 #layer", "4")
        assert not torch.equal(attribute_numbers(page, copy, "stroke-opacity"), before)
        assert torch.equal(attribute_numbers(page, first, "stroke-opacity"), before)

        second = page.locator(f"#{views[5].id} #collapsed #leftText > g")  # expand in the second neuron view
        second.nth(1).hover()
        second.nth(1).locator("rect").last.click()
        expect(page.locator(f"#{views[5].id} #expanded")).to_have_attribute("visibility", "visible")
        assert page.locator(f"#{views[5].id} .dotproduct[data-value]").count() > 0
        assert page.locator(f"#{views[4].id} .dotproduct[data-value]").count() == 0


def test_without_javascript_the_view_asks_to_run_the_cell(browser, hf_encoder, tokenizer, tmp_path):
    view = head_view(hf_encoder, tokenizer, TEXT)
    with offline_page(browser, view.save(tmp_path / "head.html").as_uri(), javascript=False) as (page, _):
        placeholder = page.locator(f"#{view.id} .course-viz-placeholder")
        assert placeholder.is_visible() and RUN_CELL_MESSAGE in placeholder.inner_text()
        assert page.locator("svg, select").count() == 0


def test_bertviz_own_view_stays_blank_offline_and_its_cdn_requests_are_caught(browser, weights, pair, tmp_path):
    """The control experiment: the guard does see external requests, and BertViz alone needs them."""
    import bertviz

    _, tokens, b_start = pair
    html = bertviz.head_view([w[None].float() for w in weights], tokens, sentence_b_start=b_start,
                             html_action="return").data
    path = tmp_path / "bertviz.html"
    path.write_text(f"<!DOCTYPE html><html><body>{html}</body></html>", encoding="utf-8")
    with offline_page(browser, path.as_uri(), expect_problems=True) as (page, problems):
        page.wait_for_load_state("load")
        assert any("external request: https://cdnjs.cloudflare.com/" in p for p in problems), problems
        assert page.locator("svg").count() == 0


def _notebook_with_stored_views(views, sources):
    import nbformat

    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                 "language": "python"}})
    notebook.cells = [
        nbformat.v4.new_code_cell(source, execution_count=i + 1, outputs=[] if view is None else [
            nbformat.v4.new_output("execute_result", {"text/html": view.html, "text/plain": repr(view)},
                                   execution_count=i + 1)])
        for i, (view, source) in enumerate(zip(views, sources))
    ]
    return notebook


@pytest.mark.slow
def test_nbconvert_html_export_draws_every_view_next_to_an_amd_loader(browser, hf_encoder, tokenizer, pair,
                                                                      tmp_path):
    """Static notebook HTML (nbconvert, as in a book): scripts run in page order, and the page has require.js."""
    from nbconvert import HTMLExporter

    _, tokens, _ = pair
    views = [head_view(hf_encoder, tokenizer, TEXT, PAIR), model_view(hf_encoder, tokenizer, TEXT)]
    notebook = _notebook_with_stored_views(views, ["head_view(...)", "model_view(...)"])
    # The lab template loads require.js and MathJax from a CDN; stand-ins keep the page offline. The
    # require.js stand-in records every define() call: the views must not register their d3 and jQuery
    # with the page's loader (with the real require.js that is a "mismatched anonymous define" error).
    (tmp_path / "require.js").write_text(
        "window.amdDefines = []; window.define = function () { window.amdDefines.push(arguments.length); };"
        "window.define.amd = {jQuery: true}; window.require = window.requirejs = function () {};")
    (tmp_path / "mathjax.js").write_text("")
    exporter = HTMLExporter(template_name="lab", require_js_url=(tmp_path / "require.js").as_uri(),
                            mathjax_url=(tmp_path / "mathjax.js").as_uri())
    page_path = tmp_path / "notebook.html"
    page_path.write_text(exporter.from_notebook_node(notebook)[0], encoding="utf-8")
    with offline_page(browser, page_path.as_uri()) as (page, _):
        expect(page.locator(f"#{views[0].id} svg #left text")).to_have_count(len(tokens))
        expect(page.locator(f"#{views[1].id} .attn_background")).to_have_count(6 * 12)
        assert page.evaluate("window.amdDefines") == []


# ----------------------------------------------------------------------------------------------- JupyterLab
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path):
    """JupyterLab on a free localhost port with a token, isolated settings, nothing that goes online."""
    port, token = _free_port(), "course-viz-test"
    env = {**os.environ, **{name: str(root / f".{name.lower()}") for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
               f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.terminals_enabled=False", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (root / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to a minute
            if server.poll() is not None:
                raise RuntimeError(f"jupyter lab exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield base, token
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"))
            server.wait(timeout=60)
        except Exception:
            server.terminate()
            server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_jupyterlab_shows_the_message_untrusted_and_the_view_after_run_all(browser, hf_encoder, tokenizer, pair,
                                                                            tmp_path):
    import nbformat

    _, tokens, _ = pair
    stored = head_view(hf_encoder, tokenizer, TEXT, PAIR)  # what an executed notebook stores
    code = ("import course_lib\nfrom course_lib.assets import load_encoder, load_tokenizer\n"
            "from course_lib.viz import head_view, model_view\n"
            f"model, tokenizer = load_encoder(), load_tokenizer()\nhead_view(model, tokenizer, {TEXT!r}, {PAIR!r})")
    notebook = _notebook_with_stored_views([stored, None], [code, f"model_view(model, tokenizer, {PAIR!r})"])
    nbformat.write(notebook, tmp_path / "views.ipynb")

    with jupyter_lab(tmp_path) as (base, token):
        allowed = (base, f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}")
        with offline_page(browser, f"{base}/lab/tree/views.ipynb?token={token}", allowed=allowed) as (page, _):
            outputs = page.locator(".jp-OutputArea-output")
            # Opened from disk the notebook is untrusted: no script runs, the placeholder says what to do.
            expect(outputs.locator(".course-viz-placeholder")).to_contain_text(RUN_CELL_MESSAGE)
            assert outputs.locator("svg").count() == 0
            page.get_by_text(re.compile(r"\| Idle$")).wait_for()  # the status bar: kernel started

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            head_tokens = outputs.locator(".course-viz svg #left text")
            expect(head_tokens).to_have_count(len(tokens), timeout=3 * TIMEOUT_MS)
            assert head_tokens.all_text_contents() == tokens
            expect(outputs.locator(".course-viz .attn_background")).to_have_count(6 * 12, timeout=3 * TIMEOUT_MS)
            expect(outputs.locator(".course-viz-placeholder")).to_have_count(0)
