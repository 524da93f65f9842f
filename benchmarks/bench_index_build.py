"""Index build throughput against bare capture throughput on real models: writing is never the bottleneck.

Two real models on real text, 2 checkpoints each, TracIn-WE-Top10, max_length 64:

* the paper's BERT-small shape (2 layers, hidden 128; seeded random init) on
  Rotten Tomatoes snippets;
* the authors' `TokenCNN` (embedding 128, two convolutions; seeded random
  init) on tweets.

For each, runs alternate ``TracInWE.capture`` of the training texts (the bare
capture, both checkpoints) and ``Index.build`` of the same texts (capture +
token-major layout + float32 write + sha256 + manifest), ``--rounds`` times;
the medians and their ratio (target: build/capture at most 1.10) are reported.

The defaults (2 and 8 segments of 4,096) measure throughput; the fixed cost of
a build (the plan, and the last segment's write, which nothing overlaps) weighs
more on smaller ones: ``--bert-texts 2048 --cnn-texts 8192`` gives a
single-segment and a two-segment build. ``--retain-freed-memory`` runs both under
`tracinwe.capture.allocator.retain_freed_memory` (what ``tracinwe index build`` does); the JSON
records the process's peak resident memory either way.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_index_build.py

Prints a table and writes ``benchmarks/results/index_build.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def models(kind: str, tokenizer, num_classes: int):
    from transformers import BertForSequenceClassification

    from tracinwe import TorchTextClassifier
    from tracinwe.models.small import TokenCNN, bert_small_config

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        if kind == "bert-small":
            out.append(BertForSequenceClassification(bert_small_config(num_classes, max_position_embeddings=64)).eval())
        else:
            m = TokenCNN(len(tokenizer), num_classes).eval()
            out.append(TorchTextClassifier(m, embedding=m.embed, num_classes=num_classes, hf_tokenizer=tokenizer, max_length=64,
                                           forward=lambda b, m=m: m(b["input_ids"], b["attention_mask"])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bert-texts", type=int, default=8192)
    parser.add_argument("--cnn-texts", type=int, default=32768)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segment-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="index_build")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc keeps freed memory (tracinwe.capture.allocator), as `tracinwe index build` does")
    args = parser.parse_args()
    if args.retain_freed_memory:
        from tracinwe.capture.allocator import retain_freed_memory

        if not retain_freed_memory():
            parser.error("--retain-freed-memory needs glibc (Linux)")

    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    from tracinwe import TracInWE
    from tracinwe.data import load_dataset_source
    from tracinwe.index import Index
    from tracinwe.models.pretrained import minilm_l6_path

    torch.set_num_threads(args.threads)
    console = Console()
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    runs = {
        "bert-small": (load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(args.bert_texts, seed=0), args.bert_texts),
        "cnn": (load_dataset_source("bundled:twitter-sentiment").dedupe().sample(args.cnn_texts, seed=0), args.cnn_texts),
    }
    figures = {}
    for kind, (data, n) in runs.items():
        tw = TracInWE([(m, 0.05) for m in models(kind, tokenizer, data.num_labels)], tokenizer=tokenizer, top_k=10,
                      max_length=64, batch_size=64)
        capture_s, build_s = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            tw.capture(data.texts, data.labels)
            capture_s.append(time.perf_counter() - t)
            folder = Path(tempfile.mkdtemp(prefix="tracinwe-bench-build-", dir="/tmp"))
            try:
                t = time.perf_counter()
                Index.build(folder / "index", tw, data.texts, data.labels, chunk_size=args.segment_size, progress=False)
                build_s.append(time.perf_counter() - t)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        c, b = statistics.median(capture_s), statistics.median(build_s)
        figures[kind] = {"texts": n, "capture_s": capture_s, "build_s": build_s, "capture_examples_per_s": 2 * n / c,
                         "build_examples_per_s": 2 * n / b, "build_over_capture": b / c}
        console.print(f"{kind}: capture {c:.1f} s, build {b:.1f} s, ratio {b / c:.3f}")
    table = Table(title="index build vs bare capture (2 checkpoints, Top-10), medians")
    for col in ("model", "texts", "capture ex/s", "build ex/s", "build / capture"):
        table.add_column(col, justify="right")
    for kind, f in figures.items():
        table.add_row(kind, str(f["texts"]), f"{f['capture_examples_per_s']:.0f}", f"{f['build_examples_per_s']:.0f}",
                      f"{f['build_over_capture']:.3f}")
    console.print(table)
    config = {"rounds": args.rounds, "segment_size": args.segment_size, "torch_threads": args.threads, "top_k": 10,
              "max_length": 64, "batch_size": 64, "seeds": [0, 1],
              "data": {"bert-small": "bundled:rotten-tomatoes", "cnn": "bundled:twitter-sentiment"},
              "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
              "load_average_1_5_15": list(__import__("os").getloadavg()), "argv": sys.argv[1:],
              "retain_freed_memory": args.retain_freed_memory,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"benchmark": "index_build", "config": config, "figures": figures,
                               "targets": {"build_over_capture": "<= 1.10"}}, indent=2))
    tmp.replace(out)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
