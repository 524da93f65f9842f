"""A synthetic index of 1,000,000 examples: disk size, build time, top-10 latency, projection recall, memory.

Shapes follow the issue: Zipf-distributed token ids (exponent ``--zipf``) over
the 30,522-token BERT vocabulary, 10 distinct tokens per example (Top-10 of
about 30) plus [CLS] and [SEP] in the dense block, hidden size 128 (the
paper's BERT-small), 2 checkpoints, float16 rows, and a p = 64 projection
(``--projection-method``: PCA fitted on 1,024 examples, or seeded Gaussian)
for the approximate screen. Gradient rows are Gaussian
with the *measured* anisotropy of real rows: the eigenvalue spectrum of unit
gradient rows, the spread of per-example gradient norms (log-normal) and the
[CLS]/[SEP]-to-word norm ratio are read from ``results/index_real.json``
(written by ``bench_index_real.py`` from a trained CNN on real tweets) when
present; otherwise isotropic rows are used (the worst case for a projection).

The index is written straight from generated arrays through the same segment
writer a real build uses (checksums included), then a *fresh process* opens it
and measures, with the page cache warm: top-10 latency for 1 query (mean over
``--singles``) and for a batch of ``--batch`` queries, exact and through the
projection (recall@10 against exact, both directions), and the peak resident
memory of that process (VmHWM, which counts memory-mapped file pages, and the
peak of anonymous memory). Free disk is checked first; the index is deleted
at the end (``--keep`` keeps it).

Usage::

    python benchmarks/bench_index_synthetic.py                    # 1,000,000 examples (about 7 GB of disk)
    python benchmarks/bench_index_synthetic.py --n 100000 --out index_synthetic-100k

Prints a table and writes ``benchmarks/results/index_synthetic.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tracinwe.index.manifest import IndexManifest

RESULTS = Path(__file__).parent / "results"
VOCAB = 30522
DENSE = (101, 102)  # [CLS], [SEP]


def load_shapes(dim: int) -> dict:
    path = RESULTS / "index_real.json"
    if path.is_file():
        shapes = json.loads(path.read_text()).get("shapes")
        if shapes and len(shapes["spectrum"]) == dim:
            return {**shapes, "source": str(path.name)}
    return {"spectrum": [1.0 / dim] * dim, "log_example_norm_std": 0.0, "dense_to_sparse_norm_ratio": 1.0, "source": "isotropic"}


class Generator:
    """Seeded synthetic examples: Zipf token ids and anisotropic Gaussian gradient rows."""

    def __init__(self, dim: int, checkpoints: int, tokens: int, zipf: float, shapes: dict, seed: int) -> None:
        self.dim, self.checkpoints, self.tokens, self.seed = dim, checkpoints, tokens, seed
        ranks = np.arange(1, VOCAB + 1, dtype=np.float64)
        p = ranks**-zipf
        self.cdf = np.cumsum(p / p.sum())
        ids = np.setdiff1d(np.arange(VOCAB), np.arange(0, 1000))  # no special / unused ids
        self.id_of_rank = np.random.default_rng(seed).permutation(ids)
        self.axis_scale = np.sqrt(np.asarray(shapes["spectrum"], dtype=np.float32) * dim)
        self.norm_std = float(shapes["log_example_norm_std"])
        self.dense_ratio = float(shapes["dense_to_sparse_norm_ratio"])

    def examples(self, n: int, stream: int):
        """Token ids (n, tokens) with -1 padding, sparse rows (n, tokens, C, d), dense rows (n, C, 2, d); float32."""
        rng = np.random.default_rng([self.seed, stream])
        draws = np.searchsorted(self.cdf, rng.random((n, self.tokens + 6)))
        draws = np.sort(self.id_of_rank[np.minimum(draws, VOCAB - 1001)], axis=1)
        dup = np.zeros_like(draws, dtype=bool)
        dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
        draws = np.where(dup, np.iinfo(np.int64).max, draws)
        draws = np.sort(draws, axis=1)[:, : self.tokens]
        draws[draws == np.iinfo(np.int64).max] = -1
        scale = np.exp(self.norm_std * rng.standard_normal(n)).astype(np.float32) / np.sqrt(self.tokens + 2 * self.dense_ratio**2)
        rows = rng.standard_normal((n, self.tokens, self.checkpoints, self.dim), dtype=np.float32)
        rows *= self.axis_scale
        rows *= scale[:, None, None, None] / np.sqrt(self.dim)
        rows[draws < 0] = 0.0
        dense = rng.standard_normal((n, self.checkpoints, len(DENSE), self.dim), dtype=np.float32)
        dense *= self.axis_scale
        dense *= (scale * self.dense_ratio)[:, None, None, None] / np.sqrt(self.dim)
        return draws, rows, dense

    def query_records(self, n: int, stream: int):
        """The queries as per-checkpoint `TokenGradients` (what `TracInWE.capture` returns)."""
        import torch

        from tracinwe.capture.records import TokenGradients

        tokens, rows, dense = self.examples(n, stream)
        out = []
        for c in range(self.checkpoints):
            ids, grads, offsets = [], [], [0]
            for i in range(n):
                keep = tokens[i] >= 0
                t = np.concatenate([np.array(DENSE), tokens[i][keep]])
                g = np.concatenate([dense[i, c], rows[i, keep, c]])
                order = np.argsort(t)
                ids.append(t[order])
                grads.append(g[order])
                offsets.append(offsets[-1] + t.size)
            out.append(TokenGradients(torch.tensor(offsets), torch.from_numpy(np.concatenate(ids)),
                                      torch.from_numpy(np.concatenate(grads)), torch.zeros(n, dtype=torch.long),
                                      torch.zeros(n, 2)))
        return out


def write_index(root: Path, gen: Generator, n: int, segment: int, projection_dim: int, method: str, lrs: list[float],
                seed: int) -> IndexManifest:
    """Generate and write every segment with the real segment writer, then the manifest.

    The projection basis is fitted as a real build fits it: on the rows of
    ``PCA_PROBE`` examples (here the first ones generated; they are i.i.d.).
    """
    import pyarrow as pa
    from tqdm.auto import tqdm

    from tracinwe.capture.gradients import CaptureSettings
    from tracinwe.index import projection
    from tracinwe.index.build import finish_build
    from tracinwe.index.manifest import CheckpointRecord, DenseToken, IndexManifest, IndexSettings
    from tracinwe.index.storage import write_segment

    plan = IndexManifest(
        settings=IndexSettings(CaptureSettings(top_k=10, max_length=64), "float16", segment),
        checkpoints=tuple(CheckpointRecord(None, lr) for lr in lrs),
        fingerprint=None,  # no model: a synthetic index is opened with Index(root, manifest, tracin=None)
        dense_tokens=(DenseToken(101, "[CLS]"), DenseToken(102, "[SEP]")),
        projection=projection.spec(projection_dim or None, method, seed),
        label_names=("0", "1"), num_examples=n,
    )
    root.mkdir(parents=True)
    records = []
    basis = None
    if projection_dim:
        tokens, rows, dense = gen.examples(min(n, projection.PCA_PROBE), stream=10**6)
        basis = projection.fit(plan.projection, rows[tokens >= 0].reshape(-1, gen.checkpoints * gen.dim),
                               dense.reshape(dense.shape[0], -1))
        projection.write(root, basis)
    lr = np.asarray(lrs, dtype=np.float64)
    for number, lo in enumerate(tqdm(range(0, n, segment), desc="writing synthetic segments", unit="segment")):
        hi = min(lo + segment, n)
        tokens, rows, dense = gen.examples(hi - lo, stream=number)
        flat_tokens = tokens.reshape(-1)
        present = flat_tokens >= 0
        example = np.repeat(np.arange(hi - lo), gen.tokens)[present]
        flat_tokens, flat_rows = flat_tokens[present], rows.reshape(-1, gen.checkpoints, gen.dim)[present]
        order = np.argsort(flat_tokens, kind="stable")
        uniq, counts = np.unique(flat_tokens[order], return_counts=True)
        offsets = np.zeros(uniq.size + 1, np.int64)
        offsets[1:] = np.cumsum(counts)
        sorted_rows = flat_rows[order]
        self_inf = (np.einsum("c,ntcd->n", lr, rows.astype(np.float64) ** 2)
                    + np.einsum("c,nctd->n", lr, dense.astype(np.float64) ** 2))
        arrays = {
            "dense": dense.astype(np.float16), "tokens": uniq.astype(np.int32), "offsets": offsets,
            "postings": example[order].astype(np.int32), "rows": sorted_rows.astype(np.float16), "self_influence": self_inf,
        }
        if basis is not None:
            arrays["rows_proj"] = (sorted_rows.reshape(sorted_rows.shape[0], -1) @ basis.rows).astype(np.float16)
            arrays["dense_proj"] = (dense.reshape(hi - lo, -1) @ basis.dense).astype(np.float16)
        table = pa.table({"id": [f"syn-{i}" for i in range(lo, hi)], "text": [f"synthetic example {i}" for i in range(lo, hi)],
                          "label": pa.array(np.arange(lo, hi) % 2, pa.int64())})
        records.append(write_segment(root, number, lo, arrays, table))
    return finish_build(root, plan, records)


def memory_status() -> dict:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def measure_queries(args) -> dict:
    """Runs in a fresh process: open the index, time searches, report memory."""
    import torch

    from tracinwe.index.index import Index
    from tracinwe.index.integrity import read_manifest

    torch.set_num_threads(args.threads)
    root = Path(args.path)
    index = Index(root, read_manifest(root), tracin=None)
    gen = Generator(args.dim, args.checkpoints, args.tokens, args.zipf, load_shapes(args.dim), args.seed)
    peak_anon = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_anon[0] = max(peak_anon[0], memory_status().get("RssAnon", 0))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    singles = [gen.query_records(1, stream=10_000 + i) for i in range(args.singles + 1)]
    batch = gen.query_records(args.batch, stream=20_000)
    out: dict = {}
    modes = [("exact", False, None)] + [(f"projected_m{m}", True, m) for m in args.candidates if args.projection_dim]
    hits_of = {}
    for mode, projected, m in modes:
        index.search(singles[0], k=10, use_projection=projected, candidates=m)  # warm up (page cache, small arrays)
        times, hits_single = [], []
        for q in singles[1:]:
            t = time.perf_counter()
            hits_single.append(index.search(q, k=10, use_projection=projected, candidates=m))
            times.append(time.perf_counter() - t)
        out[f"{mode}_single_query_s_mean"] = statistics.mean(times)
        out[f"{mode}_single_query_s_max"] = max(times)
        t = time.perf_counter()
        hits = index.search(batch, k=10, use_projection=projected, candidates=m)
        out[f"{mode}_batch_{args.batch}_s"] = time.perf_counter() - t
        hits_of[mode] = [hits] + hits_single
    for mode, _, _ in modes[1:]:
        recall = []
        for e, p in zip(hits_of["exact"], hits_of[mode]):
            for a, b in ((e.proponent_indices, p.proponent_indices), (e.opponent_indices, p.opponent_indices)):
                recall += [len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]
        out[f"{mode}_recall_at_10"] = float(np.mean(recall))
        out[f"{mode}_recall_at_10_min"] = float(np.min(recall))
    stop.set()
    mem = memory_status()
    out["query_process_peak_rss_bytes"] = mem["VmHWM"]
    out["query_process_peak_anon_bytes"] = peak_anon[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--segment", type=int, default=65536)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--checkpoints", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--projection-dim", type=int, default=64)
    parser.add_argument("--projection-method", choices=["pca", "gaussian"], default="pca")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1000, 5000],
                        help="exact rescoring candidates of the projected screen")
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--path", default="/tmp/tracinwe-bench-synthetic-index")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="measure an index left by --keep")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="index_synthetic")
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure_queries(args)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    root = Path(args.path)
    per_token = args.dim + (args.projection_dim or 0) / args.checkpoints
    estimate = args.n * args.checkpoints * (args.tokens + 2) * per_token * 2 * 1.05
    lrs = [0.05, 0.05]
    shapes = load_shapes(args.dim)
    figures: dict = {}
    if not args.reuse:
        if root.exists():
            shutil.rmtree(root)
        free = shutil.disk_usage(root.parent).free
        if free < 1.5 * estimate:
            console.print(f"[red]not enough free disk[/red]: {free / 1e9:.1f} GB free, about {estimate / 1e9:.1f} GB needed")
            sys.exit(1)
        gen = Generator(args.dim, args.checkpoints, args.tokens, args.zipf, shapes, args.seed)
        t = time.perf_counter()
        write_index(root, gen, args.n, args.segment, args.projection_dim, args.projection_method, lrs, args.seed)
        figures["build_s"] = time.perf_counter() - t
    try:
        files = [f for f in root.rglob("*") if f.is_file()]
        figures["disk_bytes"] = sum(f.stat().st_size for f in files)
        figures["disk_bytes_projection"] = sum(f.stat().st_size for f in files if f.name.endswith("_proj.npy"))
        cmd = [sys.executable, __file__, "--measure-only", *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if done.returncode != 0:
            console.print(done.stderr[-3000:])
            sys.exit(done.returncode)
        figures.update(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    config = {k: v for k, v in vars(args).items() if k not in ("measure_only", "reuse", "keep")}
    config.update({"argv": sys.argv[1:], "learning_rates": lrs, "dtype": "float16", "shapes_from": shapes["source"],
                   "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
                   "page_cache": "warm (written just before)",
                   "load_average_1_5_15": list(os.getloadavg())})
    table = Table(title=f"synthetic TracIn-WE index: {args.n:,} examples, top-10")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": "index_synthetic", "config": config, "figures": figures,
               "targets": {"exact_single_query_s_mean": "<= 1", "projected_m*_single_query_s_mean": "<= 0.2",
                           "projected_m*_recall_at_10": ">= 0.95", "query_process_peak_rss_bytes": "< 2 GB"}}
    out = RESULTS / f"{args.out}.json"
    from tracinwe.io import write_json_atomic
    write_json_atomic(out, payload)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
