"""Serve the built course website on localhost (no network needed): `python scripts/serve_book.py [--port N]`.

Build it first with `scripts/build_book.sh` (`make book`). Only this machine can reach the server.
"""
from __future__ import annotations

import argparse
import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE = ROOT / "book" / "_build" / "html"


class QuietHandler(SimpleHTTPRequestHandler):
    """Static files with correct types for the site's assets; logs only failed requests."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".woff": "font/woff", ".woff2": "font/woff2", ".svg": "image/svg+xml",
                      ".ipynb": "application/x-ipynb+json"}

    def log_request(self, code="-", size="-") -> None:
        if str(code).isdigit() and int(code) >= 400:
            super().log_request(code, size)


def make_server(site: Path, port: int = 8000, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server for `site` bound to `host` (localhost); port 0 picks a free port."""
    site = Path(site)
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"no built website at {site} (expected {site / 'index.html'}): "
                                "run scripts/build_book.sh (make book) first")
    handler = functools.partial(QuietHandler, directory=str(site))
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000, help="port on localhost (default 8000)")
    parser.add_argument("--site", type=Path, default=DEFAULT_SITE, help="built site folder")
    args = parser.parse_args(argv)
    try:
        server = make_server(args.site, args.port)
    except (FileNotFoundError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Serving {args.site} at http://localhost:{server.server_address[1]}/ (Ctrl+C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
