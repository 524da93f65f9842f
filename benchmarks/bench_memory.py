"""Peak memory of capture and scoring against the number of training texts: it must stay flat.

Each configuration runs in a fresh subprocess. The worker loads the texts and a
model (the paper's BERT-small shape or the authors' token CNN, random init, two checkpoints), warms up,
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``; where that is
not allowed the baseline is the RSS at that moment), then runs one of:

- ``capture``: ``TracInWE.iter_capture`` over N training texts, records dropped chunk by chunk;
- ``scores``: ``TracInWE.scores`` of 1,000 test texts against N training texts.

Reported per configuration: peak RSS above the baseline, the size of the output
(the n_test x N float64 score matrix, which grows with N by design), and the
difference of the two: the working memory, which must not grow with N.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --quick      # smaller smoke run (memory-quick.json)
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_capture import environment, write_result  # noqa: E402

MiB = 1 << 20
DATA_SOURCE = "bundled:rotten-tomatoes"
LEARNING_RATES = (0.1, 0.05)
MODEL_SEEDS = (0, 1)


def current_rss() -> int:
    """Resident set size now, in bytes."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize()


def peak_rss() -> int:
    """Peak resident set size since start (or since the last reset), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Set the peak-RSS counter to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def texts_for(n_test: int, n_train: int, seed: int) -> tuple[list[str], list[int], list[str], list[int]]:
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(DATA_SOURCE).dedupe().sample(n_test + n_train, seed=seed)
    texts, labels = list(data.texts), [int(y) for y in data.labels]
    return texts[n_test:], labels[n_test:], texts[:n_test], labels[:n_test]


def random_checkpoints(model: str, num_labels: int, tokenizer, max_length: int) -> list:
    """Two checkpoints: pretrained MiniLM-L6 with two seeded heads, the paper's BERT-small shape, or the authors' token CNN."""
    import torch
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, logging

    from tracinwe import TorchTextClassifier
    from tracinwe.models.pretrained import minilm_l6_path
    from tracinwe.models.small import TokenCNN, bert_small_config

    models = []
    for seed, lr in zip(MODEL_SEEDS, LEARNING_RATES):
        torch.manual_seed(seed)
        if model == "minilm":
            logging.set_verbosity_error()
            net = AutoModelForSequenceClassification.from_pretrained(minilm_l6_path(), num_labels=num_labels).eval()
            models.append((net, lr))
            continue
        if model == "bert-small":
            models.append((BertForSequenceClassification(bert_small_config(num_labels)).eval(), lr))
            continue
        cnn = TokenCNN(len(tokenizer), num_classes=num_labels, pad_id=tokenizer.pad_token_id).eval()
        models.append((TorchTextClassifier(
            cnn, cnn.embed, num_labels, hf_tokenizer=tokenizer, max_length=max_length,
            forward=lambda batch, m=cnn: m(batch["input_ids"], batch["attention_mask"]),
        ), lr))
    return models


def worker(config: dict) -> dict:
    """Run one configuration in this process and measure it."""
    from transformers import AutoTokenizer

    from tracinwe import TracInWE
    from tracinwe.models.pretrained import minilm_l6_path

    train, train_labels, test, test_labels = texts_for(config["n_test"], config["n_train"], config["seed"])
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    checkpoints = random_checkpoints(config["model"], 2, tokenizer, config["max_length"])
    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=config["max_length"], top_k=config["top_k"],
                  batch_size=config["batch_size"])
    tw.scores(train[:64], train_labels[:64], test[:8], test_labels[:8])  # warm-up: thread pools, allocator
    gc.collect()
    baseline = current_rss()
    reset = reset_peak_rss()
    if not reset:
        baseline = peak_rss()
    start = time.perf_counter()
    if config["mode"] == "capture":
        entries = 0
        for _, _, records in tw.iter_capture(train, train_labels):
            entries += int(records.token_ids.numel())
        output_bytes = 0
        shape: list[int] = [len(train)]
    else:
        scores = tw.scores(train, train_labels, test, test_labels)
        output_bytes, shape = scores.nbytes, list(scores.shape)
        entries = 0
    seconds = time.perf_counter() - start
    peak = peak_rss()
    return {**config, "seconds": seconds, "baseline_rss_mib": baseline / MiB, "peak_rss_mib": peak / MiB,
            "peak_above_baseline_mib": (peak - baseline) / MiB, "output_mib": output_bytes / MiB,
            "working_mib": (peak - baseline - output_bytes) / MiB, "output_shape": shape,
            "record_entries": entries, "peak_reset": reset}


def run_isolated(config: dict) -> dict:
    """The configuration in a fresh Python process (peak RSS is per process)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed for {config}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(rows: Sequence[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"peak RSS above baseline ({rows[0]['model'] if rows else ''}, random init, 2 checkpoints, MiB)")
    for col in ("mode", "train", "test", "seconds", "peak - baseline", "output matrix", "working memory"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["mode"], f"{r['n_train']:,}", f"{r['n_test']:,}" if r["mode"] == "scores" else "-",
                      f"{r['seconds']:.1f}", f"{r['peak_above_baseline_mib']:.1f}", f"{r['output_mib']:.1f}",
                      f"{r['working_mib']:.1f}")
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=None, help="TracIn-WE-Topk (default: all positions)")
    parser.add_argument("--modes", nargs="+", default=["capture", "scores"], choices=["capture", "scores"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", choices=["minilm", "bert-small", "cnn"], default="bert-small",
                        help="pretrained MiniLM-L6 (seeded heads), random-init BERT-small shape (2 layers, hidden 128), "
                             "or the authors' token CNN (fastest)")
    parser.add_argument("--name", default=None, help="result name (default: memory, or memory-quick with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes (results in memory-quick.json)")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    if args.quick:
        args.train_sizes, args.n_test = [200, 600], 100

    from tqdm.auto import tqdm

    configs = [
        {"mode": mode, "n_train": n, "n_test": args.n_test, "max_length": args.max_length, "batch_size": args.batch_size,
         "top_k": args.top_k, "seed": args.seed, "model": args.model}
        for n in args.train_sizes for mode in args.modes
    ]
    rows: list[dict] = []
    result = {
        "benchmark": "memory",
        "config": {k: v for k, v in vars(args).items() if k != "worker"} | {
            "model_seeds": MODEL_SEEDS,
            "learning_rates": LEARNING_RATES, "data": DATA_SOURCE, "chunk": "default (16 batches)"},
        "environment": environment(),
        "rows": rows,
    }
    name = args.name or ("memory-quick" if args.quick else "memory")
    for config in tqdm(configs, desc="configurations (one process each)"):
        rows.append(run_isolated(config))
        write_result(name, result)  # partial results survive an interrupted run
    path = write_result(name, result)
    print_table(rows)
    print(f"wrote {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
