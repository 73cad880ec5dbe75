"""Accessibility of the course website: axe-core (WCAG 2.0 and 2.1 A and AA, and axe's best practices) over every
built page, in one headless Chromium tab, offline. A critical or serious violation fails; moderate and minor ones are
reported. The scan is bounded to stay quick (about 1 to 2 s of CPU a lesson page): the attention views' drawings are
left out (their controls are scanned) and repeated code tokens are folded into their block's text (``BOUND_CODE``).
Every figure of a lesson has alt text (the cell's ``mystnb.image.alt`` metadata; without it the build writes the
image's file path as its alt text).

axe-core is vendored (tests/assets/axe-core/axe.min.js, MPL-2.0, its LICENSE next to it), so the test runs offline.
The site is the one test build of the session (conftest's ``book_build``), shared with tests/test_book.py.

    .venv/bin/python tests/test_accessibility.py book/_build/html    # the table of violations of a built site
"""
from __future__ import annotations

import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AXE = ROOT / "tests" / "assets" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("critical", "serious")
VIEWPORT = {"width": 1280, "height": 720}

# The rules of WCAG 2.0 and 2.1, levels A and AA, plus axe's best practices (cheap: landmarks, headings, names).
# The drawings of the attention views (course_lib.viz: SVGs of thousands of lines and texts, no controls) are left
# out of the scan, their controls (drop-downs, labels) are scanned; so is every other part of a page.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
AXE_EXCLUDE = [".course-viz svg"]
STORED_VIEW = ".course-viz"

# Bounding the scan of code cells: a code block is thousands of highlighted tokens, and axe's colour-contrast rule
# costs most of a lesson page's scan on them. Every token whose highlight class, colour, size, weight and
# background repeat a token already kept is unwrapped into plain text of its block (the block's own colour, itself
# scanned): every colour pair a code cell shows is still checked once per page, on about 0.3% of the tokens.
BOUND_CODE = """(EXCLUDED) => {
  const seen = new Set();
  const tokens = [...document.querySelectorAll('.highlight pre span')];
  const repeats = tokens.filter((token) => {
    const style = getComputedStyle(token), pre = token.closest('pre'), block = pre.closest('.highlight');
    const key = [token.className, style.color, style.fontSize, style.fontWeight, getComputedStyle(pre).backgroundColor,
                 getComputedStyle(block).backgroundColor, !!token.closest('.cell_output')].join('|');
    if (seen.has(key)) return true;
    seen.add(key);
    return false;
  });
  for (const token of repeats) token.replaceWith(...token.childNodes);   // read everything first, then write
  document.querySelectorAll('.highlight pre').forEach((pre) => pre.normalize());
  // The attention views' drawings, left out of the scan (AXE_EXCLUDE), are emptied too, keeping their boxes: axe
  // would still walk their thousands of elements to build its tree.
  document.querySelectorAll(EXCLUDED).forEach((drawing) => drawing.replaceChildren());
  return [tokens.length, seen.size];
}"""

RUN_AXE = """async ([tags, exclude, storedView]) => {
  const result = await axe.run({include: [document], exclude: exclude},
      {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'], elementRef: true});
  return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5), count: v.nodes.length,
      in_stored_view: v.nodes.every((n) => n.element && n.element.closest(storedView))}));
}"""

# Figures without a text alternative: no alt, an empty one, or the file path Sphinx writes when none is given.
IMAGES_WITHOUT_ALT = """() => [...document.querySelectorAll('article img, main img')]
  .filter((img) => !img.closest('.navbar-brand, .logo, .sidebar-primary-items__start'))
  .filter((img) => {
    const alt = (img.getAttribute('alt') || '').trim();
    return !alt || /(^|\\/)_images\\/|\\.(png|jpe?g|svg|gif)$/i.test(alt);
  }).map((img) => img.getAttribute('src'))"""


def site_pages(html: Path) -> list[str]:
    """Every page of the built site, as paths relative to its folder (the theme's own files and the redirect of the
    site's root left out)."""
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts
                  and 'http-equiv="refresh"' not in p.read_text(encoding="utf-8")[:2000].lower())


def audit(browser, base_url: str, pages: list[str]) -> dict[str, dict]:
    """{page: {"violations": [...], "no_alt": [...]}} for every page: one browser context and one tab, each page loaded
    once, axe injected, the code cells bounded (``BOUND_CODE``), then axe run once (``RUN_AXE``)."""
    axe_source = AXE.read_text(encoding="utf-8")
    context = browser.new_context(viewport=VIEWPORT, service_workers="block")
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base_url)
                  or route.request.url.startswith(("data:", "blob:")) else route.abort())
    page = context.new_page()
    results = {}
    for name in pages:
        page.goto(f"{base_url}/{name}", wait_until="load")
        page.evaluate(f"() => {{ if (!window.axe) {{ {axe_source}\n }} }}")
        page.evaluate(BOUND_CODE, ", ".join(AXE_EXCLUDE))
        results[name] = {"violations": page.evaluate(RUN_AXE, [AXE_TAGS, AXE_EXCLUDE, STORED_VIEW]),
                         "no_alt": page.evaluate(IMAGES_WITHOUT_ALT)}
    context.close()
    return results


def summary(results: dict[str, dict]) -> Counter:
    """Violating elements per impact, over all pages."""
    return Counter({impact: sum(v["count"] for r in results.values() for v in r["violations"] if v["impact"] == impact)
                    for impact in ("critical", "serious", "moderate", "minor")})


def serve(html: Path):
    """A localhost server of the built site (scripts/serve_book.py), running in a thread; returns (server, url)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_book", ROOT / "scripts" / "serve_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.make_server(html, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def results(site, browser):
    server, url = serve(site)
    try:
        yield audit(browser, url, site_pages(site))
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.browser
@pytest.mark.slow
def test_no_page_has_a_critical_or_serious_accessibility_violation(results):
    assert len(results) >= 10, f"only {len(results)} pages found"
    failing = [f"{page}: [{v['impact']}] {v['id']} ({v['help']}) x{v['count']}: {v['nodes']}"
               for page, r in results.items() for v in r["violations"] if v["impact"] in FAILING_IMPACTS]
    stored = sorted({page for page, r in results.items() for v in r["violations"]
                     if v["impact"] in FAILING_IMPACTS and v["in_stored_view"]})
    counts = summary(results)
    print(f"axe over {len(results)} pages: " + ", ".join(f"{n} {impact}" for impact, n in counts.items()))
    note = "".join(
        f"\n{page}: its violations inside attention views come from the outputs stored in "
        f"{page.removesuffix('.html')}.ipynb, drawn by an older course_lib.viz (the current one labels every control): "
        f"re-execute it (make execute NB={page.removesuffix('.html')}.ipynb) and rebuild the site; the website's "
        "code cannot repair them." for page in stored)
    assert not failing, "\n".join(failing) + note


@pytest.mark.browser
@pytest.mark.slow
def test_every_figure_has_alt_text(results):
    missing = {page: r["no_alt"] for page, r in results.items() if r["no_alt"]}
    assert not missing, ("figures without alt text (give their cells `mystnb: {image: {alt: ...}}` metadata): "
                         + "; ".join(f"{page}: {len(srcs)}" for page, srcs in missing.items()))


def main(html: str) -> int:
    from playwright.sync_api import sync_playwright

    from conftest import find_chromium, launch_chromium

    folder = Path(html).resolve()
    server, url = serve(folder)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright, find_chromium())
        results = audit(browser, url, site_pages(folder))
        browser.close()
    server.shutdown()
    for page, r in results.items():
        for v in r["violations"]:
            print(f"{v['impact']:9s} {v['id']:28s} x{v['count']:<3d} {page}")
        if r["no_alt"]:
            print(f"{'no alt':9s} {'figure without alt text':28s} x{len(r['no_alt']):<3d} {page}")
    counts = summary(results)
    print(f"{len(results)} pages: " + ", ".join(f"{n} {impact}" for impact, n in counts.items())
          + f", {sum(len(r['no_alt']) for r in results.values())} figures without alt text")
    return 1 if counts["critical"] or counts["serious"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
