#!/usr/bin/env bash
# The browser tests drive Debian's Chromium headless. Install it when we can (root with apt-get).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -n "${COURSE_CHROMIUM:-}" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Chromium for the browser tests (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "note: Chromium not found; the browser tests will be skipped. Install it (Debian/Ubuntu: apt-get install chromium) or set COURSE_CHROMIUM=/path/to/chrome." >&2
fi
