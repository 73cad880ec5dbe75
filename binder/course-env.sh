# Sourced by binder/postBuild (image build) and binder/start (every container start): the caches that
# `course-lib prepare` builds into the image live in the repository folder, outside the home folder that a
# JupyterHub's persistent storage mounts over.
COURSE_CACHE_DIR="${COURSE_CACHE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/course}"
export COURSE_CACHE_DIR
