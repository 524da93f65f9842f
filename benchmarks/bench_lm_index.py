"""The index over causal-LM documents: build time, bytes per document, search latency and agreement with brute force.

Model: a GPT-2 decoder (2 layers, ``--width`` wide, byte-level BPE of 2,000 tokens learned on the texts)
trained from scratch for ``--epochs`` on N real Rotten Tomatoes snippets (`tracinwe.training.causal_lm`),
two checkpoints, max_length 64. Queries: 20 held-out snippets cut into a prompt (first 3 words) and the
completion to explain. Per storage mode (float32 rows; float16 rows; float16 rows + a PCA projection of
``--projection-dim`` dims screened first, with the exact re-rank from the float16 rows; TracIn-WE-Top10 in
float16) it measures:

* build time (capture at both checkpoints + layout + write) and bytes per document (every file of the
  index folder / N, and the gradient arrays alone);
* search latency of the captured queries: one at a time (median) and the 20 together (capture of the
  queries is timed apart, it is the same for every mode);
* agreement with brute-force ``TracInWE.scores`` (same settings): recall@10 of the proponents and opponents
  (a returned row counts when its brute-force score reaches the 10th best, so exact ties count) and the
  largest score error relative to the largest |score|.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 19 python benchmarks/bench_lm_index.py
    python benchmarks/bench_lm_index.py --n-docs 300 --out lm_index-quick   # smoke run

Prints a table and writes ``benchmarks/results/lm_index.json``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
MAX_LENGTH = 64


def documents(n_docs: int, n_test: int, seed: int) -> tuple[list[str], list[dict]]:
    """Distinct real snippets of at most 200 characters: N training documents and ``n_test`` held-out completions."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe()
    texts = [t for t in data.sample(len(data), seed=seed).texts if 20 <= len(t) <= 200 and len(t.split(" ")) >= 6]
    if len(texts) < n_docs + n_test:
        raise SystemExit(f"only {len(texts)} usable snippets for {n_docs} + {n_test}")
    held = texts[n_docs : n_docs + n_test]
    queries = [{"prompt": " ".join(t.split(" ")[:3]), "completion": " " + " ".join(t.split(" ")[3:])} for t in held]
    return texts[:n_docs], queries


def recall(found_rows: np.ndarray, scores: np.ndarray, k: int, sign: float) -> float:
    """Share of returned rows whose brute-force score reaches the k-th best (ties count)."""
    s = sign * scores
    kth = -np.sort(-s, axis=1)[:, k - 1 : k]
    got = np.take_along_axis(s, found_rows, axis=1)
    return float((got >= kth - 1e-9 * np.abs(s).max()).mean())


def folder_bytes(path: Path) -> tuple[int, int]:
    """Bytes of every file under ``path``, and of the gradient arrays (.npy) alone."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), sum(f.stat().st_size for f in files if f.suffix == ".npy")


def measure_mode(name: str, tw, train: list[str], records, scores: np.ndarray, root: Path, k: int, **build) -> dict:
    from tracinwe.index import Index

    t0 = time.perf_counter()
    index = Index.build(root / name, tw, train, None, progress=False, **build)
    build_s = time.perf_counter() - t0
    total, arrays = folder_bytes(root / name)
    index.search(records, k=k)  # warm: maps, checksums of first touch
    t0 = time.perf_counter()
    found = index.search(records, k=k)
    batch_s = time.perf_counter() - t0
    singles = []
    for i in range(len(records[0])):
        one = [r.select([i]) for r in records]
        t0 = time.perf_counter()
        index.search(one, k=k)
        singles.append(time.perf_counter() - t0)
    rows = np.arange(scores.shape[0])[:, None]
    error = max(np.abs(found.proponent_scores - scores[rows, found.proponent_indices]).max(),
                np.abs(found.opponent_scores - scores[rows, found.opponent_indices]).max())
    return {
        "mode": name, "build_s": build_s, "docs_per_s": len(train) / build_s,
        "bytes_per_doc": total / len(train), "array_bytes_per_doc": arrays / len(train),
        "search_1_ms": 1000 * statistics.median(singles), "search_20_ms": 1000 * batch_s,
        "recall_proponents": recall(found.proponent_indices, scores, k, 1.0),
        "recall_opponents": recall(found.opponent_indices, scores, k, -1.0),
        "max_rel_score_error": float(error / np.abs(scores).max()),
        "segments": len(index.manifest.segments), "projection_dim": index.projection_dim, "dtype": index.manifest.dtype,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-docs", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--projection-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lm_index")
    args = parser.parse_args()

    from tracinwe import TracInWE
    from tracinwe.io import write_json_atomic
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-lm-index-"))
    try:
        train, queries = documents(args.n_docs, args.n_test, args.seed)
        config = DecoderConfig(n_layer=2, n_embd=args.width, n_head=2, n_positions=MAX_LENGTH, vocab_size=2000,
                               epochs=args.epochs, batch_size=32, num_checkpoints=2, max_length=MAX_LENGTH, seed=args.seed)
        t0 = time.perf_counter()
        run = train_decoder(train, work / "run", config)
        train_s = time.perf_counter() - t0
        train = [t for t in train if len(run.tokenizer(t)["input_ids"]) <= MAX_LENGTH]  # the facade never truncates
        rows = []
        for top_k, modes in [(None, [("float32", {}), ("float16", {"dtype": "float16"}),
                                     (f"float16+pca{args.projection_dim}",
                                      {"dtype": "float16", "projection_dim": args.projection_dim})]),
                             (10, [("top10-float16", {"dtype": "float16"})])]:
            tw = TracInWE.from_checkpoints(run.checkpoints, max_length=MAX_LENGTH, top_k=top_k, batch_size=64)
            t0 = time.perf_counter()
            scores = tw.scores(train, None, queries, None)
            brute_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            records = tw.capture(queries)
            capture_s = time.perf_counter() - t0
            for name, build in modes:
                row = measure_mode(name, tw, train, records, scores, work, args.k, **build)
                row.update(brute_force_s=brute_s, query_capture_20_ms=1000 * capture_s)
                rows.append(row)
                print(f"{name}: built in {row['build_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = (f"{'mode':<16} {'build s':>8} {'doc/s':>7} {'B/doc':>8} {'arrays B/doc':>12} {'1 query ms':>10} "
              f"{'20 q ms':>8} {'recall+':>7} {'recall-':>7} {'rel err':>8}")
    print(f"\nLM index: {len(train)} Rotten Tomatoes snippets, GPT-2 2x{args.width}, 2 checkpoints, "
          f"{args.n_test} completions, top-{args.k}")
    print(header)
    for r in rows:
        print(f"{r['mode']:<16} {r['build_s']:>8.1f} {r['docs_per_s']:>7.0f} {r['bytes_per_doc']:>8.0f} "
              f"{r['array_bytes_per_doc']:>12.0f} {r['search_1_ms']:>10.2f} {r['search_20_ms']:>8.1f} "
              f"{r['recall_proponents']:>7.3f} {r['recall_opponents']:>7.3f} {r['max_rel_score_error']:>8.1e}")
    print(f"brute force (tw.scores, {args.n_test} x {len(train)}): {rows[0]['brute_force_s']:.1f} s; "
          f"query capture (20): {rows[0]['query_capture_20_ms']:.0f} ms; total {time.perf_counter() - started:.0f} s")
    out = RESULTS / f"{args.out}.json"
    write_json_atomic(out, {
        "benchmark": "bench_lm_index", "command": " ".join(sys.argv), "n_docs": len(train), "n_test": args.n_test,
        "k": args.k, "model": {"n_layer": 2, "n_embd": args.width, "vocab_size": 2000, "checkpoints": 2,
                               "max_length": MAX_LENGTH, "epochs": args.epochs, "train_s": train_s},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        "total_s": time.perf_counter() - started, "rows": rows,
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
