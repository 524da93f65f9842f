"""CUDA capture checks: deferred records equal waiting records, and CUDA scores equal CPU scores.

On a machine with a GPU (MiniLM-L6, two seeded heads, 512 x 64 BBC News texts at 64 tokens, batch 256):

1. the capture with records aggregated on the device without waits (`tracinwe.capture.aggregate`, the default on
   CUDA) against the capture where each batch waits (``gradients.DEFER_ON_CUDA = False``): same tokens per example,
   gradient rows equal to float rounding (CUDA's ``index_add_`` sums in any order);
2. ``TracInWE.scores`` on CUDA against the same checkpoints on the CPU.

Usage (the device run of 2026-12-04 passed a float16 copy of the MiniLM folder with ``--model``)::

    HF_HUB_OFFLINE=1 python benchmarks/check_capture_cuda.py [--model FOLDER]

Prints and writes ``benchmarks/results/capture-cuda-check.json`` (``--out``); exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import RESULTS, long_texts, minilm_checkpoints  # noqa: E402


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="MiniLM-L6 folder (default: the bundled one)")
    parser.add_argument("--out", default=str(RESULTS / "capture-cuda-check.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    from tracinwe import TracInWE
    from tracinwe.capture import gradients

    texts, labels, names = long_texts(600, seed=1)
    checkpoints, tokenizer = minilm_checkpoints(len(names), args.model, "cuda")
    train, train_labels, test, test_labels = texts[:512], labels[:512], texts[512:576], labels[512:576]
    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=64, batch_size=256, device="cuda")
    deferred = tw.capture(train, train_labels)
    gradients.DEFER_ON_CUDA = False
    waiting = tw.capture(train, train_labels)
    gradients.DEFER_ON_CUDA = True
    same_layout = all(torch.equal(a.offsets, b.offsets) and torch.equal(a.token_ids, b.token_ids)
                      for a, b in zip(deferred, waiting))
    row_error = max(float((a.rows - b.rows).abs().max() / b.rows.abs().max()) for a, b in zip(deferred, waiting))
    on_gpu = np.asarray(tw.scores(train, train_labels, test, test_labels), dtype=np.float64)
    cpu = TracInWE([(m.to("cpu"), lr) for m, lr in checkpoints], tokenizer=tokenizer, max_length=64, batch_size=64,
                   device="cpu")
    on_cpu = np.asarray(cpu.scores(train, train_labels, test, test_labels), dtype=np.float64)
    top = [len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10 for a, b in zip(on_gpu, on_cpu)]
    out = {"deferred_vs_waiting_same_offsets_and_tokens": same_layout,
           "deferred_vs_waiting_max_row_error_over_max_row": row_error,
           "gpu_vs_cpu_scores_max_abs_error_over_max_abs_score": float(np.abs(on_gpu - on_cpu).max() / np.abs(on_cpu).max()),
           "gpu_vs_cpu_top10_overlap_mean": float(np.mean(top)),
           "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    print(json.dumps(out, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    ok = same_layout and row_error < 1e-5 and out["gpu_vs_cpu_scores_max_abs_error_over_max_abs_score"] < 1e-3
    if not ok:
        raise SystemExit("a CUDA capture check failed (see above)")
    return out


if __name__ == "__main__":
    main()
