#!/usr/bin/env bash
# Install recsys with its test tools and run every check. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser test drives Debian's Chromium; without it (no root, no apt) that one test is skipped, saying why.
echo "scripts/test.sh installs what the tests need: Debian's chromium and postgresql (apt-get, as root, only when" \
  "missing), torch==2.13.0 (CPU) and recsys[test] (pip, into the active environment)" >&2
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium with apt-get (browser test)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "note: could not install chromium; the browser test will be skipped" >&2
fi
# torch pinned so pip takes the CPU build (see README); the rest comes from pyproject.toml.
pip install -q torch==2.13.0 -e ".[test]"
ruff check .
# The events suite runs on PostgreSQL too: a throwaway cluster (Debian's postgresql, installed when missing)
# on a local port, stopped on exit. Where it cannot run, the PostgreSQL half of the suite skips saying why.
if [ -z "${RECSYS_TEST_POSTGRES_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/recsys-test-pg.XXXXXX)
  chmod 755 "$pg_dir"
  trap 'bash scripts/postgres.sh stop "$pg_dir/data"; rm -rf "$pg_dir"' EXIT
  if url=$(bash scripts/postgres.sh start "$pg_dir/data" "${RECSYS_TEST_POSTGRES_PORT:-55433}"); then
    export RECSYS_TEST_POSTGRES_URL="$url"
  else
    echo "note: no PostgreSQL server for the tests; its half of the events suite will be skipped" >&2
  fi
fi
python -m pytest "$@"
