#!/usr/bin/env bash
# Build the course website (Jupyter Book 1) into book/_build/html, offline, with warnings as errors.
#
# The book's source folder is the repository root: book/_config.yml and book/_toc.yml describe it, and the
# chapters are the notebooks in notebooks/ with their stored outputs (nothing is executed).
#   scripts/build_book.sh            incremental build
#   scripts/build_book.sh --all      rebuild every page
# BOOK_SOURCE (default: the repository root) and BOOK_OUTPUT (default: $BOOK_SOURCE/book; the site goes to
# $BOOK_OUTPUT/_build/html) let a test build a copy elsewhere.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=$(cd "${BOOK_SOURCE:-$ROOT}" && pwd)
OUT=${BOOK_OUTPUT:-$SRC/book}
VENV=${VENV:-$ROOT/.venv}
JB="$VENV/bin/jupyter-book"
[ -x "$JB" ] || { echo "jupyter-book not found at $JB: run 'make setup' first." >&2; exit 2; }

# Nothing may reach the network while building.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYDEVD_DISABLE_FILE_VALIDATION=1

start=$(date +%s)
# Start from an empty html folder (the parsed pages in _build/.doctrees are kept, so this stays quick): a
# chapter whose notebook was removed or renamed must not linger in the site.
rm -rf "$OUT/_build/html"
"$JB" build "$SRC" --config "$SRC/book/_config.yml" --toc "$SRC/book/_toc.yml" --path-output "$OUT" \
  -W --keep-going "$@"
html="$OUT/_build/html"
pages=$(find "$html" -name '*.html' -not -path '*/_static/*' | wc -l)
echo "==> website built in $(( $(date +%s) - start )) s: $pages pages, $(du -sh "$html" | cut -f1) in $html"
echo "    preview: $VENV/bin/python scripts/serve_book.py   (or: make serve-book)"
