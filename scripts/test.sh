#!/usr/bin/env bash
# Install recsys with its test tools and run every check. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser test drives Debian's Chromium; without it (no root, no apt) that one test is skipped, saying why.
if ! command -v chromium >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped" >&2
fi
# torch pinned so pip takes the CPU build (see README); the rest comes from pyproject.toml.
pip install -q torch==2.13.0 -e ".[test]"
ruff check .
python -m pytest "$@"
