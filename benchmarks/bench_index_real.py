"""The index on real text: 20 test x 50,000 training tweets, exact top-10, against brute force.

Model: the authors' own choice, a `TokenCNN` over BERT token ids (embedding
30,522 x 128, two convolutions), briefly trained with SGD + momentum on real
tweets (bundled Twitter sentiment, 3 classes); two checkpoints (middle and end
of the epoch), TracIn-WE-Top10 with [CLS]/[SEP] kept, max_length 64.

Training set: the deduplicated tweets minus the 20 held-out test tweets,
repeated up to ``--n-train`` (37,213 distinct tweets, so 50,000 repeats some;
repeats get distinct ids). Measured side by side in one run:

* bare capture of the training set (``TracInWE.capture``, both checkpoints);
* brute force: the core's vectorised scoring of the 20 test x N pairs from
  those in-memory gradients, then a sort (``tw.scores`` = capture + this);
* the index build (capture + layout + write), so build/capture is the cost of
  writing the index (target: at most 1.10);
* the index search of the captured queries (batch of 20, and one at a time),
  and the capture of the queries themselves (separate);
* the same index with a PCA projection (``--projection-dim``): its single-query
  search and recall@10 against brute force (a returned row counts when its
  exact score reaches the 10th best, so repeated tweets' ties count).

The top-10 scores of the index are checked against brute force in the run.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_index_real.py
    python benchmarks/bench_index_real.py --n-train 5000 --out index_real-quick   # smoke run

Prints a table and writes ``benchmarks/results/index_real.json``.
"""

from __future__ import annotations

import argparse
import copy
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


def train_cnn(tokenizer, texts, labels, num_classes: int, seed: int, lr: float, batch: int):
    """One epoch of SGD + momentum; returns two checkpoints (middle, end) as model copies."""
    from tracinwe.models.small import TokenCNN

    torch.manual_seed(seed)
    model = TokenCNN(len(tokenizer), num_classes, dim=128, channels=128)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = np.random.default_rng(seed).permutation(len(texts))
    steps = len(order) // batch
    checkpoints, losses = [], []
    model.train()
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = torch.nn.functional.cross_entropy(model(enc["input_ids"], enc["attention_mask"]),
                                                 torch.tensor([labels[i] for i in idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if step + 1 in (steps // 2, steps):
            checkpoints.append(copy.deepcopy(model).eval())
    return checkpoints, losses


def classifier(model, tokenizer, num_classes):
    from tracinwe import TorchTextClassifier

    return TorchTextClassifier(model, embedding=model.embed, num_classes=num_classes, hf_tokenizer=tokenizer, max_length=64,
                               forward=lambda b: model(b["input_ids"], b["attention_mask"]))


def shape_statistics(records, dense_ids=(101, 102), sample=200_000, seed=0) -> dict:
    """Realistic shapes for the synthetic benchmark: row spectrum, per-example norm spread, dense/sparse norm ratio."""
    rec = records[-1]
    rows, tokens = rec.rows.numpy(), rec.token_ids.numpy()
    rng = np.random.default_rng(seed)
    pick = rng.choice(rows.shape[0], min(sample, rows.shape[0]), replace=False)
    norms = np.linalg.norm(rows[pick], axis=1)
    unit = rows[pick] / np.maximum(norms[:, None], 1e-30)
    spectrum = np.linalg.eigvalsh(unit.T @ unit / unit.shape[0])[::-1]
    example_norms = np.sqrt(rec.squared_norms().numpy())
    dense = np.isin(tokens, dense_ids)
    all_norms = np.linalg.norm(rows, axis=1)
    return {
        "spectrum": (spectrum / spectrum.sum()).tolist(),
        "effective_rank": float(np.exp(-(spectrum / spectrum.sum() * np.log(spectrum / spectrum.sum() + 1e-30)).sum())),
        "log_example_norm_std": float(np.log(example_norms[example_norms > 0]).std()),
        "dense_to_sparse_norm_ratio": float(all_norms[dense].mean() / all_norms[~dense].mean()),
        "entries_per_example": float(len(tokens) / len(rec)),
    }


def recall_at_k(brute: np.ndarray, rows: np.ndarray, k: int, sign: float) -> np.ndarray:
    """Per query, the share of returned rows whose exact score reaches the k-th best (ties count as hits)."""
    kth = np.sort(sign * brute, axis=1)[:, -k]
    return (sign * np.take_along_axis(brute, rows, 1) >= kth[:, None] - 1e-12 * np.abs(brute).max()).mean(1)


def projected_figures(path, tw, texts, labels, ids, test_records, brute, args) -> dict:
    """The same index with a PCA projection: build time, projected search latency, recall@10 against brute force."""
    from tracinwe.index import Index

    t = time.perf_counter()
    index = Index.build(path, tw, texts, labels, ids=ids, chunk_size=args.segment_size, projection_dim=args.projection_dim,
                        progress=True)
    build_s = time.perf_counter() - t
    index.search(test_records, k=10)
    times, recalls = [], []
    for i in range(len(test_records[0])):
        one = [r.select([i]) for r in test_records]
        t = time.perf_counter()
        hits = index.search(one, k=10)
        times.append(time.perf_counter() - t)
        recalls += [recall_at_k(brute[i : i + 1], hits.proponent_indices, 10, 1.0)[0],
                    recall_at_k(brute[i : i + 1], hits.opponent_indices, 10, -1.0)[0]]
    return {"projected_build_s": build_s, "projected_search_s_single_mean": statistics.mean(times),
            "projected_recall_at_10": float(np.mean(recalls)), "projected_recall_at_10_min": float(np.min(recalls))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--train-cnn-on", type=int, default=8000, help="tweets used to train the CNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the 2 cores are shared)")
    parser.add_argument("--segment-size", type=int, default=16384, help="examples per index segment")
    parser.add_argument("--projection-dim", type=int, default=64, help="also build a PCA-projected index (0: skip)")
    parser.add_argument("--out", default="index_real")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    from tracinwe import TracInWE
    from tracinwe.data import load_dataset_source
    from tracinwe.index import Index
    from tracinwe.models.pretrained import minilm_l6_path
    from tracinwe.results import TopInfluences
    from tracinwe.scoring.influence import tracin_matrix

    torch.set_num_threads(args.threads)
    console = Console()
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    data = load_dataset_source("bundled:twitter-sentiment").dedupe()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(data))
    test, pool = data.subset(order[: args.n_test]), data.subset(order[args.n_test :])
    reps = -(-args.n_train // len(pool))
    train_texts = (pool.texts * reps)[: args.n_train]
    train_labels = (pool.labels * reps)[: args.n_train]
    train_ids = [f"{i}#{r}" for r in range(reps) for i in pool.ids][: args.n_train]

    t = time.perf_counter()
    models, losses = train_cnn(tokenizer, pool.texts[: args.train_cnn_on], pool.labels[: args.train_cnn_on], data.num_labels,
                               args.seed, 0.05, 64)
    train_s = time.perf_counter() - t
    lrs = [0.05, 0.05]
    tw = TracInWE([(classifier(m, tokenizer, data.num_labels), lr) for m, lr in zip(models, lrs)], top_k=10, max_length=64,
                  batch_size=128)
    console.print(f"CNN trained on {args.train_cnn_on} tweets in {train_s:.1f} s "
                  f"(loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f})")

    t = time.perf_counter()
    train_records = tw.capture(train_texts, train_labels)
    capture_s = time.perf_counter() - t
    t = time.perf_counter()
    test_records = tw.capture(test.texts)  # explain the predictions
    query_capture_s = time.perf_counter() - t
    t = time.perf_counter()
    brute = tracin_matrix(test_records, train_records, lrs).numpy()
    reference = TopInfluences.from_scores(brute, 10)
    brute_s = time.perf_counter() - t
    shapes = shape_statistics(train_records)
    del train_records
    console.print(f"capture {capture_s:.1f} s, brute-force scoring {brute_s:.2f} s")

    folder = Path(tempfile.mkdtemp(prefix="tracinwe-bench-index-", dir="/tmp"))
    try:
        t = time.perf_counter()
        index = Index.build(folder / "index", tw, train_texts, train_labels, ids=train_ids, label_names=data.label_names,
                            chunk_size=args.segment_size, progress=True)
        build_s = time.perf_counter() - t
        disk = sum(f.stat().st_size for f in (folder / "index").rglob("*") if f.is_file())
        index.search(test_records, k=10)  # warm the page cache and the small arrays
        batch_times, single_times = [], []
        for _ in range(3):
            t = time.perf_counter()
            hits = index.search(test_records, k=10)
            batch_times.append(time.perf_counter() - t)
        for i in range(len(test.texts)):
            one = [r.select([i]) for r in test_records]
            t = time.perf_counter()
            index.search(one, k=10)
            single_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        results = index.query(test.texts, k=10, words=5)
        query_s = time.perf_counter() - t
        scale = np.abs(brute).max()
        rows = np.arange(len(test.texts))[:, None]
        exact = {
            "max_abs_diff_top10_scores_relative": float(max(
                np.abs(hits.proponent_scores - reference.proponent_scores).max(),
                np.abs(hits.opponent_scores - reference.opponent_scores).max()) / scale),
            "max_abs_diff_returned_vs_brute_relative": float(max(
                np.abs(brute[rows, hits.proponent_indices] - hits.proponent_scores).max(),
                np.abs(brute[rows, hits.opponent_indices] - hits.opponent_scores).max()) / scale),
            "same_rows_fraction": float(((hits.proponent_indices == reference.proponent_indices).mean()
                                         + (hits.opponent_indices == reference.opponent_indices).mean()) / 2),
        }
        first = results[0]
        projected = projected_figures(folder / "projected", tw, train_texts, train_labels, train_ids, test_records, brute, args) \
            if args.projection_dim else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    n_pass = args.n_train * len(lrs)
    figures = {
        "train_capture_s": capture_s,
        "capture_examples_per_s": n_pass / capture_s,
        "build_s": build_s,
        "build_examples_per_s": n_pass / build_s,
        "build_over_capture": build_s / capture_s,
        "index_disk_bytes": disk,
        "query_capture_s_20": query_capture_s,
        "brute_force_scoring_s_20": brute_s,
        "brute_force_tw_scores_s_20": brute_s + capture_s + query_capture_s,
        "index_search_s_20_median": statistics.median(batch_times),
        "index_search_s_single_mean": statistics.mean(single_times),
        "index_search_s_single_max": max(single_times),
        "index_query_with_words_s_20": query_s,
        **exact,
        **projected,
    }
    config = {
        "n_train": args.n_train, "n_distinct_train": len(pool), "n_test": args.n_test, "seed": args.seed,
        "data": "bundled:twitter-sentiment (deduped)",
        "model": "TokenCNN(30522 x 128, 2 conv, 128 channels), SGD momentum 0.9 lr 0.05, batch 64, 1 epoch on "
                 f"{args.train_cnn_on} tweets; checkpoints at mid and end of the epoch",
        "learning_rates": lrs, "top_k": 10, "max_length": 64, "batch_size": 128, "dtype": "float32",
        "segment_size": args.segment_size,
        "cnn_loss_first20_last20": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "torch_threads": args.threads, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "argv": sys.argv[1:], "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
        "load_average_1_5_15": list(__import__("os").getloadavg()),
    }
    table = Table(title=f"TracIn-WE index: {args.n_test} test x {args.n_train} real training tweets, exact top-10")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"first query: {first.text!r} -> top proponent {first.proponents[0].text!r} ({first.proponents[0].score:+.3e}) "
                  f"via {[w.token for w in first.proponents[0].words]}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": "index_real", "config": config, "figures": figures, "shapes": shapes,
               "targets": {"index_search_s_20_median": "<= 0.5", "build_over_capture": "<= 1.10"}}
    out = RESULTS / f"{args.out}.json"
    from tracinwe.io import write_json_atomic
    write_json_atomic(out, payload)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
