#!/usr/bin/env bash
# Install everything, lint, then run the whole test suite (slow end-to-end and browser tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Browser tests drive Debian's Chromium through Playwright (no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install Debian's chromium package for the browser tests" >&2
  fi
fi
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check src tests benchmarks
# -m "" overrides the fast lane of pyproject's addopts (-m 'not slow'): every test runs, slow ones included.
python -m pytest -m "" "$@"
