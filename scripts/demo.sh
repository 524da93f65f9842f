#!/usr/bin/env bash
# Install everything, then run the demo on real data (Rotten Tomatoes + MiniLM-L6).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
tracinwe demo "$@"
