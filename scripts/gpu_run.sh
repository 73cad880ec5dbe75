#!/usr/bin/env bash
# Run every lesson notebook in the full profile on a CUDA machine, under nbval, and record the run times.
#
#   bash scripts/gpu_run.sh                      # all notebooks
#   bash scripts/gpu_run.sh notebooks/04_*.ipynb # some of them
#
# Cells tagged "device-dependent" or "profile-dependent" run but are not compared with the stored (quick, CPU)
# outputs; every other code cell must reproduce its stored output (docs/gpu.md). Times and peak host memory
# go to docs/timings.json under "full-gpu", and docs/timings.md is re-rendered.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"

"$PY" - <<'PYTHON'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("scripts/gpu_run.sh needs a CUDA GPU, and torch here sees none "
             f"(torch {torch.__version__}). On a CPU machine run `make test` instead.")
print(f"GPU: {torch.cuda.get_device_name(0)} | torch {torch.__version__}")
PYTHON

"$PY" -m course_lib prepare
"$PY" scripts/nbval_run.py --profile full --record "$@"
