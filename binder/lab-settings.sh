#!/usr/bin/env bash
# The course works offline: JupyterLab must neither ask on first start whether to fetch Jupyter news nor look
# for updates. binder/overrides.json says so; this installs it as the default settings of the JupyterLab of one
# Python environment ($PREFIX/share/jupyter/lab/settings/overrides.json, read at every start, below any
# setting a learner changes). Used by `make lab`, binder/postBuild and the dev container.
#   bash binder/lab-settings.sh [PYTHON]     (default: python3 on PATH)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
prefix=$("${1:-python3}" -c 'import sys; print(sys.prefix)')
target="$prefix/share/jupyter/lab/settings"
mkdir -p "$target"
if ! cmp -s "$here/overrides.json" "$target/overrides.json"; then
  cp "$here/overrides.json" "$target/overrides.json"
fi
