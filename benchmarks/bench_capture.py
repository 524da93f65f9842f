"""Capture throughput against the physical limit, and TracIn-WE against Captum's TracInCP.

Two measurements on MiniLM-L6 (two checkpoints: the pretrained encoder with two
seeded classification heads, learning rates 1e-3 and 5e-4), on real BBC News
articles truncated to a fixed number of tokens, so that every batch is full
(``--models bert-small cnn``: the throughput of the paper's BERT-small shape,
hidden 128, and of the TokenCNN, two seeded checkpoints each, where tokenisation
weighs most; capture with and without batches tokenised ahead, side by side):

1. Throughput of ``TracInWE.capture`` (tokenization, forward, activation-only
   backward, sparse record building) against the same model's bare forward +
   activation-only backward on the same pre-tokenized batches (the physical
   limit of the method). The bare pass includes only ``classifier.logits`` on a
   batch already tokenised and in memory, the summed cross-entropy and
   ``torch.autograd.grad`` w.r.t. the lookup output: no tokenisation, no
   records. Every text fills ``max_length``, so the bare batches and the ones
   the capture forms (grouped by token count) have the same padded tokens (the
   JSON records both). Runs alternate bare / ours; the median is reported, with
   the 1-minute load average at every round (``--autogroup-nice -15`` raises this
   process's scheduling group on a shared machine).
2. ``TracInWE.scores`` against ``captum.influence.TracInCP`` restricted to the
   word-embedding layer on the same 256 training texts and 16 / 128 test texts:
   the maximum relative difference of the scores and the two wall-clock times,
   measured side by side in this run. Captum keeps one dense (V x d) gradient
   per test text and checkpoint (47 MB for MiniLM), so test texts are given to
   it in chunks (``--captum-test-chunk``) to bound its memory.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_capture.py
    python benchmarks/bench_capture.py --quick      # a smaller smoke run (not the reported figures)
    python benchmarks/bench_capture.py --models bert-small cnn --lengths 64 --throughput-texts 1024 --batch-size 64 \
        --skip-captum --threads 2 --name capture-small-cpu2

Prints tables and writes ``benchmarks/results/capture.json`` (``capture-quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
LEARNING_RATES = (1e-3, 5e-4)
HEAD_SEEDS = (0, 1)
DATA_SOURCE = "bundled:bbc-news"
EMBEDDING_LAYER = "model.bert.embeddings.word_embeddings"


# -- shared helpers (also used by bench_memory.py) -------------------------------------------


def environment() -> dict:
    """Versions and machine facts recorded beside every result."""
    import transformers

    import tracinwe

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "tracinwe": tracinwe.__version__, "numpy": np.__version__}
    try:
        import captum

        versions["captum"] = captum.__version__
    except ImportError:
        pass
    return {"versions": versions, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg(), "autogroup": autogroup()}


def raise_priority(nice: int | None) -> None:
    """Set this process's autogroup niceness (``/proc/self/autogroup``; ``nice`` does not reach across autogroups)."""
    if nice is not None:
        Path("/proc/self/autogroup").write_text(f"{nice}\n")


def autogroup() -> str | None:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def write_result(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def long_texts(n: int, seed: int = 0) -> tuple[list[str], list[int], list[str]]:
    """``n`` distinct BBC News articles (hundreds of words: every text fills the token budget)."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(DATA_SOURCE).dedupe().sample(n, seed=seed)
    return list(data.texts), [int(y) for y in data.labels], list(data.label_names)


def minilm_checkpoints(num_labels: int, folder: str | None = None,
                       device: str = "cpu") -> tuple[list[tuple[nn.Module, float]], object]:
    """Two MiniLM-L6 checkpoints (seeded heads, float32) with their learning rates, and the tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, logging

    from tracinwe.models.pretrained import minilm_l6_path

    logging.set_verbosity_error()
    folder = folder or minilm_l6_path()
    models = []
    for seed, lr in zip(HEAD_SEEDS, LEARNING_RATES):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels)
        models.append((model.float().to(device).eval(), lr))
    return models, AutoTokenizer.from_pretrained(folder)


def small_checkpoints(kind: str, num_labels: int, max_length: int,
                      device: str = "cpu") -> tuple[list[tuple[object, float]], object]:
    """Two seeded small checkpoints on the MiniLM vocabulary: the paper's BERT-small shape (2 layers, hidden 128) or the
    authors' TokenCNN (embedding 128), with the learning rates and the tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from tracinwe import TorchTextClassifier
    from tracinwe.models.pretrained import minilm_l6_path
    from tracinwe.models.small import TokenCNN, bert_small_config

    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    out: list[tuple[object, float]] = []
    for seed, lr in zip(HEAD_SEEDS, LEARNING_RATES):
        torch.manual_seed(seed)
        if kind == "bert-small":
            model = BertForSequenceClassification(bert_small_config(num_labels, len(tokenizer), max_length)).eval()
            out.append((model.to(device), lr))
        else:
            m = TokenCNN(len(tokenizer), num_labels).eval().to(device)
            out.append((TorchTextClassifier(m, embedding=m.embed, num_classes=num_labels, hf_tokenizer=tokenizer,
                                            max_length=max_length,
                                            forward=lambda b, m=m: m(b["input_ids"], b["attention_mask"])), lr))
    return out, tokenizer


def synchronize(device: str) -> None:
    """Wait for queued accelerator work, so that wall-clock times are complete."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# -- 1. capture against the bare forward + activation-only backward ---------------------------


def bare_pass_seconds(classifier, batches: Sequence[dict], labels: Sequence[torch.Tensor], device: str,
                      precision: str = "float32") -> float:
    """Forward + gradient w.r.t. the lookup output only (weights frozen, eval mode), nothing else (the forward under
    bfloat16 autocast with ``precision="bfloat16"``, as the capture runs it)."""
    from tracinwe.capture.gradients import prepared_for_capture

    module, embedding = classifier.module, classifier.embedding
    taken: list[torch.Tensor] = []

    def make_leaf(_module, _inputs, output):
        leaf = output.detach().requires_grad_(True)
        taken.append(leaf)
        return leaf

    handle = embedding.register_forward_hook(make_leaf)
    try:
        with prepared_for_capture(module, None), torch.enable_grad():
            synchronize(device)
            start = time.perf_counter()
            for batch, y in zip(batches, labels):
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                    logits = classifier.logits(batch)  # HuggingFace: module(**batch).logits
                loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
                torch.autograd.grad(loss, taken.pop())
            synchronize(device)
            return time.perf_counter() - start
    finally:
        handle.remove()


def capture_seconds(tw, texts: Sequence[str], labels: Sequence[int]) -> float:
    """``TracInWE.capture`` end to end: tokenization, forward/backward, sparse records (on the CPU)."""
    synchronize(str(tw.device or "cpu"))
    start = time.perf_counter()
    records = tw.capture(texts, labels)
    elapsed = time.perf_counter() - start
    assert len(records) == len(tw.checkpoints) and len(records[0]) == len(texts)
    return elapsed


def throughput(checkpoints, tokenizer, texts, labels, max_length: int, batch_size: int, repeats: int, device: str,
               precision: str = "float32") -> dict:
    """Examples (x checkpoints) per second: bare pass and TracInWE capture, alternating runs."""
    from tracinwe import TracInWE
    from tracinwe.capture.batching import background_workers
    from tracinwe.capture.prefetch import can_overlap

    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size, device=device,
                  precision=precision)
    per_checkpoint = []
    for c in range(len(checkpoints)):
        clf = tw.classifier(c)
        batches, ys = [], []
        for b in range(0, len(texts), batch_size):
            batch = clf.tokenize(texts[b : b + batch_size])
            if batch["input_ids"].shape[1] != max_length or not bool(batch["attention_mask"].all()):
                raise SystemExit(f"texts shorter than {max_length} tokens: the batches would not be full")
            batches.append({k: v.to(device) for k, v in batch.items()})
            ys.append(torch.tensor(labels[b : b + batch_size], device=device))
        per_checkpoint.append((clf, batches, ys))

    def bare() -> float:
        return sum(bare_pass_seconds(clf, batches, ys, device, precision) for clf, batches, ys in per_checkpoint)

    def ours() -> float:
        return capture_seconds(tw, texts, labels)

    def plain() -> float:
        """The capture with tokenisation in the calling thread (no prefetching), for comparison."""
        from tracinwe.capture import prefetch

        ahead, prefetch.PREFETCH_BATCHES = prefetch.PREFETCH_BATCHES, 0
        try:
            return capture_seconds(tw, texts, labels)
        finally:
            prefetch.PREFETCH_BATCHES = ahead

    from tracinwe.capture.batching import accelerator_tokenize_workers, pad_values, tokenize_window

    threads = accelerator_tokenize_workers()

    def window_tokenize(workers: int) -> float:
        """All texts tokenised as one window by ``workers`` threads (on an accelerator: `accelerator_tokenize_workers`)."""
        start = time.perf_counter()
        tokenize_window(per_checkpoint[0][0], texts, None, pad_values(per_checkpoint[0][0]), workers)
        return time.perf_counter() - start

    def tokenize_only() -> float:
        """The tokenization capture does (once: the checkpoints share a tokenizer), which the bare pass is spared."""
        start = time.perf_counter()
        clf = per_checkpoint[0][0]
        for b in range(0, len(texts), batch_size):
            clf.tokenize(texts[b : b + batch_size])
        return time.perf_counter() - start

    from tracinwe.capture import gradients

    ran: list[int] = []  # padded tokens of the batches the capture runs (recorded once): equal to the bare batches'
    real = gradients.batch_token_gradients
    gradients.batch_token_gradients = lambda clf, batch, y, s, **kw: (ran.append(int(batch["input_ids"].numel())),
                                                                real(clf, batch, y, s, **kw))[1]
    try:
        ours()
    finally:
        gradients.batch_token_gradients = real
    bare(), ours(), plain()  # warm-up: thread pools, allocator, tokenizer caches
    times: dict[str, list[float]] = {"bare": [], "capture": [], "capture_no_prefetch": [], "tokenize": [],
                                     "window_tokenize_1_thread": [], f"window_tokenize_{threads}_threads": []}
    faults: dict[str, list[int]] = {"bare": [], "capture": []}  # minor page faults of the process during each run
    loads = [os.getloadavg()[0]]
    for _ in range(repeats):
        for key, run in (("bare", bare), ("capture", ours)):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[key].append(run())
            faults[key].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        times["capture_no_prefetch"].append(plain())
        times["tokenize"].append(tokenize_only())
        times["window_tokenize_1_thread"].append(window_tokenize(1))
        times[f"window_tokenize_{threads}_threads"].append(window_tokenize(threads))
        loads.append(os.getloadavg()[0])
    work = len(texts) * len(checkpoints)
    bare_rate = work / statistics.median(times["bare"])
    ours_rate = work / statistics.median(times["capture"])
    return {
        "device": device, "max_length": max_length, "texts": len(texts), "checkpoints": len(checkpoints),
        "batch_size": batch_size, "precision": precision,
        "deferred_records": device.startswith("cuda") and gradients.DEFER_ON_CUDA,
        "tokenize_workers": background_workers(torch.device(device)), "repeats": repeats, "seconds": times,
        "minor_page_faults": faults,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_per_round": loads,
        "padded_tokens_capture_batches": sum(ran), "padded_tokens_bare_batches": sum(
            int(b["input_ids"].numel()) for _, batches, _ in per_checkpoint for b in batches),
        "prefetch_on": can_overlap(torch.device(device)),  # else "capture" tokenises in the calling thread too
        "bare_examples_per_s": bare_rate, "capture_examples_per_s": ours_rate, "ratio": ours_rate / bare_rate,
        "ratio_no_prefetch": statistics.median(times["bare"]) / statistics.median(times["capture_no_prefetch"]),
        # per-round ratios of runs made back to back, then their median: robust to a load that drifts between rounds
        "ratio_paired": statistics.median(b / c for b, c in zip(times["bare"], times["capture"])),
        "ratio_no_prefetch_paired": statistics.median(b / c for b, c in zip(times["bare"], times["capture_no_prefetch"])),
        "prefetch_speedup_paired": statistics.median(p / c for p, c in zip(times["capture_no_prefetch"], times["capture"])),
        "tokenize_share_of_capture": statistics.median(times["tokenize"]) / statistics.median(times["capture"]),
        "ratio_without_tokenization": statistics.median(times["bare"])
        / (statistics.median(times["capture"]) - statistics.median(times["tokenize"])),
        # the host side of an accelerator's capture: its threads tokenising (TOKENIZERS_PARALLELISM as set)
        "accelerator_tokenize_threads": threads,
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        "window_tokenize_speedup_paired": statistics.median(
            a / b for a, b in zip(times["window_tokenize_1_thread"], times[f"window_tokenize_{threads}_threads"])),
    }


# -- 2. against Captum's TracInCP -------------------------------------------------------------


class LogitsOf(nn.Module):
    """Captum calls ``model(*batch[:-1])``: (input_ids, attention_mask) -> logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def padded_loader(tokenizer, texts, labels, max_length: int, batch_size: int, device: str = "cpu"):
    """(input_ids, attention_mask, labels) batches padded to the longest text of the batch, as we tokenize."""
    from torch.utils.data import DataLoader

    rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]

    def collate(items):
        width = max(len(ids) for ids, _ in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, (row, _) in enumerate(items):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids.to(device), mask.to(device), torch.tensor([label for _, label in items], device=device)

    return DataLoader(list(zip(rows, labels)), batch_size=batch_size, shuffle=False, collate_fn=collate)


def captum_tracin(checkpoints, tokenizer, train_texts, train_labels, max_length: int, batch_size: int, device: str):
    """Captum's TracInCP on the word-embedding weight; checkpoints are loaded from memory (its best case)."""
    from captum.influence import TracInCP

    states = {f"checkpoint-{c}": (copy.deepcopy(m.state_dict()), lr) for c, (m, lr) in enumerate(checkpoints)}
    wrapper = LogitsOf(copy.deepcopy(checkpoints[0][0])).eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)  # Captum turns on only the embedding weight: no other weight gradient is built

    def load(model: nn.Module, name: str) -> float:
        state, lr = states[name]
        model.model.load_state_dict(state)
        return lr

    return TracInCP(
        wrapper,
        padded_loader(tokenizer, train_texts, train_labels, max_length, batch_size, device),
        checkpoints=list(states),
        checkpoints_load_func=load,
        layers=[EMBEDDING_LAYER],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        sample_wise_grads_per_batch=False,  # Captum's per-sample trick handles Linear/Conv only, not Embedding
    )


def timed(fn: Callable[[], np.ndarray], device: str) -> tuple[np.ndarray, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def against_captum(checkpoints, tokenizer, texts, labels, n_train: int, test_sizes: Sequence[int], max_length: int,
                   batch_size: int, test_chunk: int, repeats: int, device: str,
                   captum_batch_size: int | None = None) -> Iterator[dict]:
    """Scores and times of TracInWE.scores and Captum TracInCP on the same texts, one row per test-set size."""
    from tracinwe import TracInWE

    train_texts, train_labels = texts[:n_train], labels[:n_train]
    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size, device=device)
    captum_batch_size = captum_batch_size or batch_size
    captum = captum_tracin(checkpoints, tokenizer, train_texts, train_labels, max_length, captum_batch_size, device)
    tw.scores(train_texts[:8], train_labels[:8], texts[n_train : n_train + 2], labels[n_train : n_train + 2])  # warm-up
    for n_test in test_sizes:
        test_texts, test_labels = texts[n_train : n_train + n_test], labels[n_train : n_train + n_test]

        def ours(test_texts=test_texts, test_labels=test_labels) -> np.ndarray:  # the loop's values, bound now
            return tw.scores(train_texts, train_labels, test_texts, test_labels)

        def theirs(test_texts=test_texts, test_labels=test_labels, n_test=n_test) -> np.ndarray:
            chunk = test_chunk or n_test
            parts = []
            for lo in range(0, n_test, chunk):
                inputs = padded_loader(tokenizer, test_texts[lo : lo + chunk], test_labels[lo : lo + chunk], max_length, chunk,
                                       device)
                parts.append(captum.influence(inputs).double().cpu().numpy())
            return np.concatenate(parts)

        our_times = []
        for _ in range(repeats):
            got, seconds = timed(ours, device)
            our_times.append(seconds)
        expected, captum_seconds = timed(theirs, device)
        scale = float(np.abs(expected).max())
        large = np.abs(expected) > 1e-3 * scale
        yield {
            "device": device, "n_train": n_train, "n_test": n_test, "captum_train_batch_size": captum_batch_size,
            "max_length": max_length, "captum_test_chunk": test_chunk or n_test,
            "tracinwe_seconds": our_times, "tracinwe_median_s": statistics.median(our_times),
            "captum_seconds": captum_seconds, "speedup": captum_seconds / statistics.median(our_times),
            "max_relative_difference": float(np.abs(got - expected).max()) / scale,
            "max_abs_score": scale,
            "sign_agreement": float((np.sign(got[large]) == np.sign(expected[large])).mean()),
        }


# -- 3. bfloat16 capture against float32 ------------------------------------------------------


def precision_agreement(checkpoints, tokenizer, texts, labels, n_train: int, n_test: int, max_length: int, batch_size: int,
                        device: str, k: int = 10) -> dict:
    """Scores of a bfloat16 capture against the exact float32 ones on the same texts: error and ranking agreement."""
    from tracinwe import TracInWE

    train, train_labels = texts[:n_train], labels[:n_train]
    test, test_labels = texts[n_train : n_train + n_test], labels[n_train : n_train + n_test]
    got = {}
    for precision in ("float32", "bfloat16"):
        tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size, device=device,
                      precision=precision)
        got[precision] = np.asarray(tw.scores(train, train_labels, test, test_labels), dtype=np.float64)
    exact, fast = got["float32"], got["bfloat16"]
    scale = np.abs(exact).max(axis=1, keepdims=True)
    clear = np.abs(exact) > 0.01 * scale
    top = [len(set(np.argsort(-e)[:k]) & set(np.argsort(-f)[:k])) / k for e, f in zip(exact, fast)]
    return {"n_train": n_train, "n_test": n_test, "max_length": max_length, "device": device,
            "max_abs_error_over_max_abs_score": float((np.abs(fast - exact) / scale).max()),
            "median_abs_error_over_max_abs_score": float(np.median(np.abs(fast - exact) / scale)),
            "sign_agreement_above_1pct": float((np.sign(fast) == np.sign(exact))[clear].mean()),
            f"top{k}_overlap_mean": float(np.mean(top)), f"top{k}_overlap_min": float(np.min(top))}


# -- report -----------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="capture throughput vs bare forward + activation-only backward (examples x checkpoints / s)")
    for col in ("model", "tokens", "texts", "bare ex/s", "capture ex/s", "ratio", "target", "ratio no prefetch",
                "tokenize share", "ratio w/o tokenize", "window tokenize: threads, speedup"):
        table.add_column(col, justify="right")
    for row in result["throughput"]:
        table.add_row(row.get("model", "minilm"), str(row["max_length"]), str(row["texts"]), f"{row['bare_examples_per_s']:.1f}",
                      f"{row['capture_examples_per_s']:.1f}", f"{row['ratio']:.3f}", ">= 0.9",
                      f"{row.get('ratio_no_prefetch', float('nan')):.3f}",
                      f"{row.get('tokenize_share_of_capture', float('nan')):.2f}",
                      f"{row.get('ratio_without_tokenization', float('nan')):.3f}",
                      f"{row.get('accelerator_tokenize_threads', '-')}, "
                      f"{row.get('window_tokenize_speedup_paired', float('nan')):.2f}x")
    console.print(table)
    table = Table(title="TracInWE.scores vs Captum TracInCP on the word embeddings (MiniLM-L6, 2 checkpoints)")
    for col in ("train x test", "tokens", "Captum batch", "TracInWE s", "Captum s", "speedup", "max rel diff", "sign agree"):
        table.add_column(col, justify="right")
    for row in result["captum"]:
        table.add_row(f"{row['n_train']} x {row['n_test']}", str(row["max_length"]), str(row.get("captum_train_batch_size", "")),
                      f"{row['tracinwe_median_s']:.1f}",
                      f"{row['captum_seconds']:.1f}", f"{row['speedup']:.1f}x", f"{row['max_relative_difference']:.1e}",
                      f"{row['sign_agreement']:.3f}")
    console.print(table)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[48, 128], help="tokens per text")
    parser.add_argument("--throughput-texts", type=int, nargs="+", default=[96, 64], help="texts per length")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per method (median reported)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--captum-train", type=int, default=256)
    parser.add_argument("--captum-test", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--captum-length", type=int, default=48)
    parser.add_argument("--captum-test-chunk", type=int, default=64,
                        help="test texts per Captum call (0: all at once); Captum holds chunk x 2 x 47 MB of gradients")
    parser.add_argument("--captum-batch-size", type=int, default=None,
                        help="Captum's training batch size (default: --batch-size, the same batches as ours). Its cost "
                             "per batch grows with the square of it: one backward over the whole batch per example")
    parser.add_argument("--skip-captum", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="MiniLM-L6 folder (default: the bundled one)")
    parser.add_argument("--name", default=None, help="result name (default: capture, or capture-quick with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text sample")
    parser.add_argument("--models", nargs="+", default=["minilm"], choices=["minilm", "bert-small", "cnn"],
                        help="throughput models: MiniLM-L6, the paper's BERT-small shape (hidden 128), the TokenCNN")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="capture (and bare pass) precision: bfloat16 runs the forward under autocast")
    parser.add_argument("--no-defer", action="store_true",
                        help="CUDA: each batch waits for its records (the capture before deferred host copies)")
    parser.add_argument("--tokenize-workers", type=int, default=None,
                        help="accelerator: threads tokenising ahead of the model (default 1, tracinwe.capture.batching)")
    parser.add_argument("--precision-check", type=int, nargs=2, default=None, metavar=("TRAIN", "TEST"),
                        help="also score TRAIN x TEST texts in float32 and bfloat16 (MiniLM) and report their agreement")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (results in capture-quick.json)")
    parser.add_argument("--autogroup-nice", type=int, default=None,
                        help="write this niceness to /proc/self/autogroup (e.g. -15 on a machine shared with other jobs)")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc: keep freed memory in the process (tracinwe.capture.allocator, as `tracinwe index "
                             "build` does); bare pass and capture alike")
    args = parser.parse_args(argv)
    raise_priority(args.autogroup_nice)
    if args.retain_freed_memory:
        from tracinwe.capture.allocator import retain_freed_memory

        if not retain_freed_memory():
            parser.error("--retain-freed-memory needs glibc (Linux)")
    if args.quick:
        args.throughput_texts, args.repeats = [32] * len(args.lengths), 1
        args.captum_train, args.captum_test, args.captum_test_chunk = 32, [4, 8], 4
    if len(args.throughput_texts) != len(args.lengths):
        parser.error("give one --throughput-texts per --lengths")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tokenize_workers is not None:
        from tracinwe.capture import batching

        batching.ACCELERATOR_TOKENIZE_WORKERS = args.tokenize_workers
    if args.no_defer:
        from tracinwe.capture import gradients

        gradients.DEFER_ON_CUDA = False
    needed = max(max(args.throughput_texts), args.captum_train + max(args.captum_test), sum(args.precision_check or [0]))
    texts, labels, label_names = long_texts(needed, seed=args.seed)
    checkpoints, tokenizer = (minilm_checkpoints(len(label_names), args.model, args.device)
                              if "minilm" in args.models or not args.skip_captum else (None, None))
    result: dict = {
        "benchmark": "capture",
        "config": {**vars(args), "model_folder": args.model, "model": "all-MiniLM-L6-v2 (pretrained encoder, seeded heads)",
                   "head_seeds": HEAD_SEEDS, "learning_rates": LEARNING_RATES, "data": DATA_SOURCE,
                   "num_labels": len(label_names)},
        "environment": environment(),
        "throughput": [],
        "captum": [],
    }
    name = args.name or ("capture-quick" if args.quick else "capture")
    for model in args.models:
        for max_length, n in zip(args.lengths, args.throughput_texts):
            ckpts, tok = (checkpoints, tokenizer) if model == "minilm" else small_checkpoints(
                model, len(label_names), max(args.lengths), args.device)
            row = throughput(ckpts, tok, texts[:n], labels[:n], max_length, args.batch_size, args.repeats, args.device,
                             args.precision)
            result["throughput"].append({"model": model, **row})
            write_result(name, result)  # partial results survive an interrupted run
    if not args.skip_captum:
        for row in against_captum(
            checkpoints, tokenizer, texts, labels, args.captum_train, args.captum_test, args.captum_length,
            args.batch_size, args.captum_test_chunk, repeats=1 if args.quick else 3, device=args.device,
            captum_batch_size=args.captum_batch_size,
        ):
            result["captum"].append(row)
            write_result(name, result)
    if args.precision_check:
        result["precision"] = precision_agreement(checkpoints, tokenizer, texts, labels, *args.precision_check,
                                                  max_length=min(args.lengths), batch_size=args.batch_size, device=args.device)
        print(json.dumps(result["precision"], indent=1))
    path = write_result(name, result)
    print_tables(result)
    print(f"wrote {path}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
