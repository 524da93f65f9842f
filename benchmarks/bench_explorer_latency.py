"""Explorer latency: seconds per POST /api/explain on a real index, checkpoints kept loaded vs reloaded.

Usage: python benchmarks/bench_explorer_latency.py INDEX [--n 20] [--seed 0]
(INDEX: e.g. tracinwe-demo/index from `tracinwe demo`). Prints a table and writes
benchmarks/results/explorer_latency.json with the config and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

import tracinwe
from tracinwe.data import load_dataset_source
from tracinwe.index import Index
from tracinwe.web import create_app


def timed_queries(client: TestClient, texts: list[str], k: int) -> list[float]:
    out = []
    for text in texts:
        started = time.perf_counter()
        answer = client.post("/api/explain", json={"text": text, "k": k})
        out.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("index", type=Path)
    parser.add_argument("--n", type=int, default=20, help="queries per setting")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    texts = load_dataset_source("bundled:rotten-tomatoes").sample(args.n, seed=args.seed + 1).texts
    rows = {}
    for name, preload in (("checkpoints kept loaded (tracinwe serve)", True), ("checkpoints reloaded per query", False)):
        started = time.perf_counter()
        client = TestClient(create_app(Index.open(args.index), preload=preload))
        startup = time.perf_counter() - started
        timed_queries(client, texts[:1], args.k)  # warm-up
        seconds = timed_queries(client, texts, args.k)
        rows[name] = {"startup_s": startup, "median_s": statistics.median(seconds),
                      "p90_s": sorted(seconds)[int(0.9 * (len(seconds) - 1))], "max_s": max(seconds)}
    table = Table(title=f"POST /api/explain, {args.n} real reviews, k={args.k}, index {args.index}")
    for col in ("setting", "startup s", "median s", "p90 s", "max s"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for name, r in rows.items():
        table.add_row(name, f"{r['startup_s']:.1f}", f"{r['median_s']:.3f}", f"{r['p90_s']:.3f}", f"{r['max_s']:.3f}")
    names = list(rows)
    ratio = rows[names[1]]["median_s"] / rows[names[0]]["median_s"]
    console = Console()
    console.print(table)
    console.print(f"kept loaded is {ratio:.1f}x faster per query (median, same run)")
    result = {"rows": rows, "median_ratio_reloaded_over_kept": ratio,
              "config": {"index": str(args.index), "examples": len(Index.open(args.index)), "n": args.n, "k": args.k,
                         "seed": args.seed, "torch": torch.__version__, "tracinwe": tracinwe.__version__,
                         "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_average": os.getloadavg()}}
    out = Path("benchmarks/results/explorer_latency.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
