#!/usr/bin/env bash
# Rewrites requirements/constraints.txt from the environment in $VENV (default .venv): every installed package at
# its exact version, without the course itself (editable), the model and data packages (requirements/assets.txt
# pins them, hash-checked) and local version labels (torch 2.13.0+cpu is written 2.13.0: the build is chosen at
# install time, scripts/torch_source.sh). Run it after changing a range in pyproject.toml and installing:
#   .venv/bin/pip install -e ".[lab,test,book]" && make lock
# LOCK_OUT=FILE writes elsewhere (to compare). Tools installed by hand into the environment are written too:
# check the diff before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin/python
out=${LOCK_OUT:-requirements/constraints.txt}
normalise() { tr 'A-Z_.' 'a-z--'; }
assets=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' requirements/assets.txt | normalise)
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
{
  echo "# Exact versions of every package in the course environment (CPU, Python $version)."
  echo "# Regenerate with: make lock   (scripts/lock.sh). torch's build (CPU or CUDA) is chosen at install time."
  "$PY" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' | sed 's/+[A-Za-z0-9.]*$//' |
    while IFS= read -r line; do
      name=$(printf '%s' "${line%%==*}" | normalise)
      grep -qxF "$name" <<< "$assets" || printf '%s\n' "$line"
    done | sort -f
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") packages)"
