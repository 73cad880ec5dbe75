"""Screenshots of the built website for the docs: the introduction and two chapters, as small PNGs.

    .venv/bin/python book/take_screenshots.py [--site book/_build/html] [--out docs/screenshots] [pages...]

Pages are paths inside the site, optionally with "#" and an element id or a CSS selector to scroll to
(e.g. "notebooks/02_attention.html#div.course-viz"); default: the index, then lessons 01 and 02, or the
first two chapters built.
Runs headless Chromium (COURSE_CHROMIUM or `chromium` on PATH) with every non-localhost request blocked.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import os
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VIEWPORT = {"width": 1280, "height": 900}  # a laptop screen; the PNG is scaled down to WIDTH pixels
WIDTH = 1000
MAX_BYTES = 200_000


def serve_module():
    spec = importlib.util.spec_from_file_location("serve_book", ROOT / "scripts" / "serve_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_pages(site: Path) -> list[str]:
    chapters = sorted(p.relative_to(site).as_posix() for p in (site / "notebooks").glob("[0-9][0-9]_*.html"))
    preferred = [c for c in chapters if c.startswith(("notebooks/01_", "notebooks/02_"))]
    return ["index.html", *(preferred if len(preferred) == 2 else chapters[:2])]


def small_png(png: bytes) -> bytes:
    """Scale to WIDTH pixels and re-encode as an optimised 256-colour PNG (text stays legible, files small)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.Resampling.LANCZOS)
    image = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def take(site: Path, out: Path, pages: list[str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("Chromium not found: run scripts/ensure-chromium.sh or set COURSE_CHROMIUM")
    server = serve_module().make_server(site, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            context = browser.new_context(viewport=VIEWPORT)
            context.route("**/*", lambda route: route.continue_()
                          if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost") else route.abort())
            for page_path in pages:
                page = context.new_page()
                address = urlsplit(page_path)
                page.goto(f"{base}/{address.path}", wait_until="networkidle")
                if address.fragment:  # scroll there without the theme's highlight of a "#target"
                    page.evaluate("f => { (document.getElementById(f) || document.querySelector(f)).scrollIntoView();"
                                  " window.scrollBy(0, -120); }", address.fragment)
                page.evaluate("() => window.MathJax && MathJax.startup ? MathJax.startup.promise : null")
                page.wait_for_timeout(500)  # let the attention views finish drawing
                name = Path(address.path).stem
                target = out / f"book_{name}.png"
                data = small_png(page.screenshot(full_page=False))
                if len(data) > MAX_BYTES:
                    raise SystemExit(f"{target.name} would be {len(data):,} bytes (limit {MAX_BYTES:,})")
                target.write_bytes(data)
                written.append(target)
                page.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", type=Path, default=ROOT / "book" / "_build" / "html")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("pages", nargs="*")
    args = parser.parse_args(argv)
    for path in take(args.site, args.out, args.pages or default_pages(args.site)):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
