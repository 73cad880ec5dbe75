#!/usr/bin/env bash
# Which build of the pinned torch a machine gets, as the pip arguments that choose it (one per line).
#   no NVIDIA GPU  -> the CPU build: PyTorch's CPU index beside PyPI (its 2.13.0+cpu sorts above PyPI's 2.13.0,
#                     which on Linux is the CUDA build with gigabytes of nvidia-* packages); a local
#                     2.13.0+cpu wheel that pip's own settings find (find-links) is taken the same way
#   an NVIDIA GPU  -> nothing: PyPI's build, which is the CUDA one on Linux
# COURSE_TORCH=cpu|cuda overrides the detection; TORCH_INDEX_URL replaces the CPU index (a mirror, say).
#   bash scripts/torch_source.sh            # prints e.g. "--extra-index-url\nhttps://download.pytorch.org/whl/cpu"
#   bash scripts/torch_source.sh --explain  # one sentence: which build and why
set -euo pipefail

cpu_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
choice=${COURSE_TORCH:-}
why="set by COURSE_TORCH"
if [ -z "$choice" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    choice=cuda why="an NVIDIA GPU is present (nvidia-smi)"
  else
    choice=cpu why="no NVIDIA GPU found"
  fi
fi
case "$choice" in
  cpu) args=(--extra-index-url "$cpu_index") ;;
  cuda) args=() ;;
  *) echo "COURSE_TORCH must be cpu or cuda, got '$choice'" >&2; exit 2 ;;
esac
if [ "${1:-}" = "--explain" ]; then
  echo "the $choice build of torch ($why; COURSE_TORCH=cpu or cuda overrides)"
else
  [ ${#args[@]} -eq 0 ] || printf '%s\n' "${args[@]}"
fi
