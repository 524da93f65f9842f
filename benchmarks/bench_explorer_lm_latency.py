"""Explorer latency on a causal-LM index: seconds per ``POST /api/generate``, checkpoints kept loaded vs reloaded.

Model: a GPT-2 decoder (2 layers, ``--width`` wide, byte-level BPE of 2,000 tokens learned on the texts) trained
from scratch for ``--epochs`` on N real Rotten Tomatoes snippets (`tracinwe.training.causal_lm`), two checkpoints,
max_length 64, and its index (float32 rows, full TracIn-WE) -- or ``--index IDX``, an LM index you built. Requests:
``--n`` held-out snippets cut into a prompt (their first 3 words) and either

* ``generated``: the final checkpoint's greedy completion of ``--max-new-tokens`` tokens, then explained, or
* ``given``: the rest of the snippet as the completion to explain,

each answered with the top ``--k`` proponents / opponents from the index and, per completion token, its ``k``
supporters among them (`tracinwe.report.generation.index_generation_view`, what ``tracinwe serve`` returns),
through the FastAPI app in process (`fastapi.testclient`, no network). "kept loaded" is ``tracinwe serve``
(`create_app(index)`); "reloaded" opens the checkpoints again for every request (``preload=False``).

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 19 python benchmarks/bench_explorer_lm_latency.py
    python benchmarks/bench_explorer_lm_latency.py --n-docs 200 --n 5 --out explorer_lm_latency-quick   # smoke run

"in handler s" is the median of the answers' own ``seconds`` (the explanation, without HTTP and JSON).
Prints a table and writes ``benchmarks/results/explorer_lm_latency.json`` (config, argv, threads, load average).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
MAX_LENGTH = 64


def snippets(n_docs: int, n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct real snippets of 20-200 characters and at least 6 words: N training documents, ``n_test`` held out."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe()
    texts = [t for t in data.sample(len(data), seed=seed).texts if 20 <= len(t) <= 200 and len(t.split(" ")) >= 6]
    if len(texts) < n_docs + n_test:
        raise SystemExit(f"only {len(texts)} usable snippets for {n_docs} + {n_test}")
    return texts[:n_docs], texts[n_docs : n_docs + n_test]


def build_index(work: Path, n_docs: int, width: int, epochs: float, seed: int) -> tuple[Path, dict]:
    """Train the decoder on ``n_docs`` snippets and index them; ``(index folder, what was built and how long it took)``."""
    from tracinwe import TracInWE
    from tracinwe.index import Index
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    train, _ = snippets(n_docs, 0, seed)
    config = DecoderConfig(n_layer=2, n_embd=width, n_head=2, n_positions=MAX_LENGTH, vocab_size=2000, epochs=epochs,
                           batch_size=32, num_checkpoints=2, max_length=MAX_LENGTH, seed=seed)
    t0 = time.perf_counter()
    run = train_decoder(train, work / "run", config)
    train_s = time.perf_counter() - t0
    train = [t for t in train if len(run.tokenizer(t)["input_ids"]) <= MAX_LENGTH]  # the facade never truncates
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=MAX_LENGTH, batch_size=64)
    t0 = time.perf_counter()
    Index.build(work / "index", tw, train, None, progress=True)
    return work / "index", {"n_layer": 2, "n_embd": width, "vocab_size": 2000, "checkpoints": 2, "max_length": MAX_LENGTH,
                            "epochs": epochs, "train_s": train_s, "index_build_s": time.perf_counter() - t0}


def timed(client, bodies: list[dict]) -> tuple[list[float], list[float], list[int]]:
    """Seconds per request (client side), seconds inside the handler (the answer's ``seconds``), completion tokens."""
    seconds, server, tokens = [], [], []
    for body in bodies:
        started = time.perf_counter()
        answer = client.post("/api/generate", json=body)
        seconds.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"POST /api/generate {body}: {answer.status_code} {answer.text[:300]}")
        view = answer.json()
        server.append(view["seconds"])
        tokens.append(len(view["tokens"]))
    return seconds, server, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, default=None, help="an existing causal-LM index (default: build one)")
    parser.add_argument("--n-docs", type=int, default=500)
    parser.add_argument("--n", type=int, default=20, help="requests per setting")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="explorer_lm_latency")
    args = parser.parse_args()

    from fastapi.testclient import TestClient
    from rich.console import Console
    from rich.table import Table

    import tracinwe
    from tracinwe.index import Index
    from tracinwe.io import write_json_atomic
    from tracinwe.web import create_app

    torch.manual_seed(args.seed)
    started, load_before = time.perf_counter(), os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-explorer-lm-"))
    try:
        model = None
        if args.index is None:
            args.index, model = build_index(work, args.n_docs, args.width, args.epochs, args.seed)
        _, held = snippets(args.n_docs, args.n, args.seed)  # the next snippets after the indexed ones
        prompts = [" ".join(t.split(" ")[:3]) for t in held]
        bodies = {
            "generated": [{"prompt": p, "max_new_tokens": args.max_new_tokens, "k": args.k} for p in prompts],
            "given": [{"prompt": p, "completion": " " + " ".join(t.split(" ")[3:]), "k": args.k}
                      for p, t in zip(prompts, held)],
        }
        rows = []
        for setting, preload in (("kept loaded (tracinwe serve)", True), ("reloaded per request", False)):
            t0 = time.perf_counter()
            index = Index.open(args.index)
            client = TestClient(create_app(index, preload=preload), base_url="http://127.0.0.1:8000")
            startup = time.perf_counter() - t0
            for kind, requests in bodies.items():
                timed(client, requests[:1])  # warm-up
                seconds, server, tokens = timed(client, requests)
                rows.append({"setting": setting, "completion": kind, "startup_s": startup, "n": len(seconds),
                             "median_s": statistics.median(seconds), "p90_s": sorted(seconds)[int(0.9 * (len(seconds) - 1))],
                             "max_s": max(seconds), "server_median_s": statistics.median(server),
                             "median_tokens": statistics.median(tokens)})
                print(f"{setting}, {kind}: median {rows[-1]['median_s']:.3f} s", file=sys.stderr, flush=True)
        n_docs = len(Index.open(args.index))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"POST /api/generate on an LM index of {n_docs} real Rotten Tomatoes snippets, "
                        f"{args.n} prompts per row, k={args.k}")
    for col in ("setting", "completion", "startup s", "median s", "p90 s", "max s", "in handler s", "tokens (median)"):
        table.add_column(col, justify="left" if col in ("setting", "completion") else "right")
    for r in rows:
        table.add_row(r["setting"], r["completion"], f"{r['startup_s']:.1f}", f"{r['median_s']:.3f}", f"{r['p90_s']:.3f}",
                      f"{r['max_s']:.3f}", f"{r['server_median_s']:.3f}", f"{r['median_tokens']:.0f}")
    console = Console(width=max(Console().width, 120))
    console.print(table)
    out = RESULTS / f"{args.out}.json"
    write_json_atomic(out, {
        "benchmark": "bench_explorer_lm_latency", "command": " ".join(sys.argv), "index": str(args.index) if model is None
        else "built by the benchmark", "n_docs": n_docs, "n": args.n, "k": args.k, "max_new_tokens": args.max_new_tokens,
        "model": model, "rows": rows, "total_s": time.perf_counter() - started,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "tracinwe": tracinwe.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
    })
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
