"""A TracIn-WE index over 1,000,000 real texts: exact single-query, 20-query and 1,000-query latencies, memory.

Texts: every bundled corpus (Rotten Tomatoes, SMS spam, BBC News, 20 Newsgroups
train + test, Reuters R8 train + test, tweets), each document and, for those with
more than one, its sentences (and windows of at most ``WINDOW`` words of longer
ones, e.g. the unpunctuated newsgroups), deduplicated; repeated with a suffix
" (2)", " (3)", ... per repeat up to ``--n-train`` (the suffix changes the
tokens, so repeats are near-duplicates, not copies). Held-out Rotten Tomatoes
snippets are the queries: 20 for the latencies, ``--batch`` for the batched search.

Model: the BERT-small of ``bench_index_query.py`` (2 layers, hidden 128, from
scratch on Rotten Tomatoes, two checkpoints), max_length 64. Labels: the final
checkpoint's predictions (computed once, cached in the work folder; the
corpora's own labels are other tasks'). Index: full TracIn-WE (every token), float16 rows (float32 would be
~2x the disk), 32,768-example segments.

Measured in one process that only opened the index (peak resident memory from
``/proc/self/status``, reset between parts), page cache warm, pruning on (the
default) beside pruning off (the full token-major screen, float16 candidates
rescored exactly):

* one query at a time (``--singles`` texts): ``index.search`` on captured
  gradients and ``index.query`` (capture + search + 5 words per neighbour);
* 20 queries at once: ``index.search``, ``index.query``;
* ``--batch`` queries at once (``index.search``) against ``--batch`` x one query;
* exactness: pruned == unpruned (rows and scores) on the 20, and the scores
  against brute-force ``tw.scores`` on 5 queries x a seeded 1,000-row sample.

``--first-query`` measures instead what one ``tracinwe index query`` waits for: a fresh process opens the index
with the defaults (``verify="quick"``: the segments' large files are hashed before their first read) and times its
first query; with the segments hashed by one thread, by the default pool (`tracinwe.index.integrity.HASH_THREADS`),
and with no checks (``verify="none"``), in rounds.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_index_million.py --threads 2
    python benchmarks/bench_index_million.py --n-train 50000 --out index_million-quick   # smoke run

The build is resumable and cached in ``--workdir``. Prints a table and writes
``benchmarks/results/index_million.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
#: Longest passage (words) cut from a sentence; longer sentences are split into windows of this many words.
WINDOW = 32
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def passages(text: str) -> list[str]:
    """The document and, when it has more than one, its sentences (windows of at most `WINDOW` words)."""
    pieces = []
    for sentence in SENTENCE_END.split(text):
        words = sentence.split()
        pieces += [" ".join(words[i:i + WINDOW]) for i in range(0, len(words), WINDOW)]
    return [text] + pieces if len(pieces) > 1 else [text]


def corpus(seed: int, n_test: int, n_batch: int) -> tuple[list[str], list[str], list[str]]:
    """(distinct training passages, ``n_test`` test snippets, ``n_batch`` batch-query snippets): the test and
    batch snippets are held-out Rotten Tomatoes texts, absent from the training passages."""
    from tracinwe.data.bundled import BUNDLED_DATASETS, load_bundled

    reviews = load_bundled("rotten-tomatoes").dedupe().texts
    order = np.random.default_rng(seed).permutation(len(reviews))
    held = [reviews[i] for i in order[: n_test + n_batch]]
    held_set = set(held)
    seen: dict[str, None] = {}
    for name in BUNDLED_DATASETS:
        for text in load_bundled(name).texts:
            for piece in passages(text):
                if piece.strip() and piece not in held_set:
                    seen.setdefault(piece, None)
    return list(seen), held[:n_test], held[n_test:]


def repeated(texts: list[str], n: int) -> list[str]:
    """``texts`` repeated up to ``n``, repeat r > 1 suffixed " (r)"."""
    reps = -(-n // len(texts))
    return [t if r == 0 else f"{t} ({r + 1})" for r in range(reps) for t in texts][:n]


def repeated_at(texts: list[str], row: int) -> str:
    """``repeated(texts, n)[row]`` without making the list."""
    r, i = divmod(row, len(texts))
    return texts[i] if r == 0 else f"{texts[i]} ({r + 1})"


def released_memory() -> None:
    """Collect garbage and hand glibc's free heap back to the system: the querying process then holds what a server
    holds, not the training texts this script made."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def resident() -> dict[str, int]:
    """This process's resident memory now (bytes): all, anonymous (its own allocations) and file-backed (the index's
    memory-mapped pages it touched, which the kernel may drop and read again)."""
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{field}:\s+(\d+) kB", status).group(1)) * 1024
            for key, field in (("all", "VmRSS"), ("anon", "RssAnon"), ("file", "RssFile"))}


def peak_rss_reset() -> int:
    """This process's peak resident memory so far (bytes); then the peak is reset to the current resident size."""
    status = Path("/proc/self/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024
    Path("/proc/self/clear_refs").write_text("5")
    return peak


def timed(fn, repeats: int):
    """(fastest seconds, last result) over ``repeats`` calls after a warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def same_hits(a, b, scale: float) -> tuple[bool, int]:
    """(same top k, rows that differ): scores equal to float64 rounding (1e-12 of the largest, the sums run in
    another order), so a row may differ only where its score ties another's (either order breaks the tie)."""
    same, swapped = True, 0
    for ra, rb, sa, sb in ((a.proponent_indices, b.proponent_indices, a.proponent_scores, b.proponent_scores),
                           (a.opponent_indices, b.opponent_indices, a.opponent_scores, b.opponent_scores)):
        same &= bool(np.allclose(sa, sb, rtol=0, atol=1e-12 * scale))
        swapped += int((ra != rb).sum())
    return same, swapped


def build(args, folders, train_texts: list[str]) -> float:
    """Build (or resume) the index in this process; seconds."""
    from tracinwe import TracInWE
    from tracinwe.index import Index

    tw = TracInWE.from_checkpoints([str(f) for f in folders], [0.05, 0.05], max_length=64, batch_size=128)
    ids = [f"p{i}" for i in range(len(train_texts))]
    t = time.perf_counter()
    Index.build(Path(args.workdir) / f"index-n{args.n_train}", tw, train_texts, predicted(args, tw, train_texts), ids=ids,
                dtype="float16", chunk_size=args.segment_size, progress=True)
    return time.perf_counter() - t


def predicted(args, tw, train_texts: list[str]) -> list[int]:
    """The final checkpoint's predicted class per training text (cached in the work folder)."""
    path = Path(args.workdir) / f"labels-n{args.n_train}.npy"
    if not path.exists():
        np.save(path, np.asarray(tw.predicted_labels(train_texts), dtype=np.int64))
    return np.load(path).tolist()


def measure(args, folders, sample: np.ndarray, sample_texts: list[str], test: list[str], batch: list[str]) -> dict:
    """Every latency, memory and exactness figure, in this process (which only opened the index; ``sample_texts``:
    the training texts at the rows ``sample``, scored by brute force)."""
    from tracinwe import TracInWE
    from tracinwe.index import Index

    tw = TracInWE.from_checkpoints([str(f) for f in folders], [0.05, 0.05], max_length=64, batch_size=128)
    tw.keep_loaded()
    labels_path = Path(args.workdir) / f"labels-n{args.n_train}.npy"
    if not labels_path.exists():
        raise SystemExit(f"{labels_path} is missing: the build writes it (run with --build-only)")
    labels = np.load(labels_path)
    released_memory()
    before = resident()["all"]
    peak_rss_reset()
    t = time.perf_counter()
    index = Index.open(Path(args.workdir) / f"index-n{args.n_train}", tw, verify="none")
    out: dict = {"open_s": time.perf_counter() - t, "rss_before_open_bytes": before, "rss_after_open_bytes": peak_rss_reset()}
    records = tw.capture(test)
    singles = [tw.capture(test[i:i + 1]) for i in range(args.singles)]
    for name, prune in (("on", True), ("off", False)):
        if prune or not args.skip_unpruned_singles:
            one = [timed(lambda r=r, p=prune: index.search(r, k=10, prune=p), args.repeats)[0] for r in singles]
            out[f"single_search_s_mean_{name}"], out[f"single_search_s_max_{name}"] = float(np.mean(one)), float(max(one))
        if prune:
            one = [timed(lambda i=i: index.query(test[i:i + 1], k=10), args.repeats)[0] for i in range(args.singles)]
            out["single_query_s_mean_on"], out["single_query_s_max_on"] = float(np.mean(one)), float(max(one))
        out[f"search20_s_{name}"], hits = timed(lambda p=prune: index.search(records, k=10, prune=p), args.repeats)
        out[f"hits_{name}"] = hits
        if prune:
            out["query20_s_on"], _ = timed(lambda: index.query(test, k=10), args.repeats)
            out["query20_words0_s_on"], _ = timed(lambda: index.query(test, k=10, words=0), args.repeats)
            out["peak_rss_single_and_20_bytes"] = peak_rss_reset()
            out.update({f"rss_{key}_after_20_bytes": value for key, value in resident().items()})
    search = index.searcher.start(records, 10, prune=True)
    index.searcher.screen(search)
    out["postings_read_on"], out["postings_total"] = search.count.rows_read, search.count.rows_total
    out["dense_read_on"], out["dense_total"] = search.count.dense_read, search.count.dense_total
    on, off = out.pop("hits_on"), out.pop("hits_off")
    scale = float(np.abs(off.proponent_scores).max())
    out["pruned_equals_unpruned"], out["rows_swapped_in_ties"] = same_hits(on, off, scale)
    brute = tw.scores(sample_texts, labels[sample].tolist(), test[:5])
    q = index.searcher.query_block(records, False)
    exact = np.stack([index.searcher.exact_rows(q, i, sample) for i in range(5)])
    out["stored_vs_brute_sample_max_rel_diff"] = float(np.abs(exact - brute).max() / np.abs(brute).max())
    if args.batch:
        batch_records = tw.capture(batch)
        peak_rss_reset()
        t = time.perf_counter()
        index.search(batch_records, k=10)
        out[f"search{args.batch}_s_on"] = time.perf_counter() - t
        out[f"peak_rss_search{args.batch}_bytes"] = peak_rss_reset()
        out[f"search{args.batch}_over_one"] = out[f"search{args.batch}_s_on"] / out["single_search_s_mean_on"]
    return out


FIRST_QUERY_CHILD = """
import json, sys, time
import torch
from tracinwe import TracInWE
from tracinwe.index import Index, integrity
folders, path, verify, threads, text = json.loads(sys.argv[1])
torch.set_num_threads(2)
integrity.HASH_THREADS = threads
tw = TracInWE.from_checkpoints(folders, [0.05, 0.05], max_length=64, batch_size=128)
tw.keep_loaded()
start = time.perf_counter()
index = Index.open(path, tw, verify=verify)
opened = time.perf_counter()
index.query([text], k=10)
print(json.dumps({"open_s": opened - start, "first_query_s": time.perf_counter() - opened}))
"""


def first_queries(args, folders, text: str, rounds: int = 2) -> dict:
    """Seconds a fresh process takes to open the index and answer its first query, per verify mode and hash threads."""
    from tracinwe.index.integrity import hash_threads

    path = str(Path(args.workdir) / f"index-n{args.n_train}")
    variants = {"quick_1_thread": ("quick", 1), f"quick_{hash_threads()}_threads": ("quick", None), "none": ("none", 1)}
    out: dict = {name: [] for name in variants}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for _ in range(rounds):
        for name, (verify, threads) in variants.items():
            payload = json.dumps([[str(f) for f in folders], path, verify, threads, text])
            done = subprocess.run([sys.executable, "-c", FIRST_QUERY_CHILD, payload], capture_output=True, text=True,
                                  env=env, check=True)
            out[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1_000_000)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--singles", type=int, default=10, help="test texts queried one at a time")
    parser.add_argument("--batch", type=int, default=1000, help="queries searched at once (0: skip)")
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--search-threads", type=int, default=None,
                        help="threads screening segments side by side (default: the library's, SEARCH_THREADS)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--segment-size", type=int, default=32768)
    parser.add_argument("--skip-unpruned-singles", action="store_true", help="time pruning off on the 20 only")
    parser.add_argument("--workdir", default="/tmp/tracinwe-bench-index-million")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--first-query", action="store_true",
                        help="only time a fresh process's open and first query, per verify mode (writes OUT.json)")
    parser.add_argument("--out", default="index_million")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    from bench_index_query import train_bert
    from tracinwe.data.bundled import load_bundled
    from tracinwe.io import write_json_atomic
    from tracinwe.models.pretrained import minilm_l6_path

    torch.set_num_threads(args.threads)
    from tracinwe.index import searcher

    if args.search_threads is not None:
        searcher.SEARCH_THREADS = args.search_threads
    console = Console()
    distinct, test, batch = corpus(args.seed, args.n_test, args.batch)
    n_distinct = len(distinct)
    console.print(f"{n_distinct:,} distinct passages, {args.n_train:,} training texts")
    model_dir = Path(args.workdir) / f"bert-s{args.seed}-steps{args.train_steps}"
    model_dir.mkdir(parents=True, exist_ok=True)
    reviews = load_bundled("rotten-tomatoes").dedupe()
    held = set(test) | set(batch)
    keep = [i for i, t in enumerate(reviews.texts) if t not in held]
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    folders, losses = train_bert(tokenizer, [reviews.texts[i] for i in keep], [reviews.labels[i] for i in keep],
                                 args.seed, 0.05, args.train_steps, 32, model_dir)
    if args.build_only:
        console.print(f"build: {build(args, folders, repeated(distinct, args.n_train)):.0f} s")
        return
    if not (Path(args.workdir) / f"index-n{args.n_train}" / "manifest.json").exists():
        # the build runs in its own process, so that this one's memory is the querying process's alone
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--build-only"], check=True)
        build_s = time.perf_counter() - t
    else:
        build_s = None
    if args.first_query:
        runs = first_queries(args, folders, test[0])
        table = Table(title="a fresh process: open the 1M index, answer one query (seconds, per round)")
        for col in ("variant", "open", "first query"):
            table.add_column(col, justify="right")
        for name, rounds in runs.items():
            table.add_row(name, ", ".join(f"{r['open_s']:.2f}" for r in rounds),
                          ", ".join(f"{r['first_query_s']:.2f}" for r in rounds))
        console.print(table)
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"{args.out}.json"
        write_json_atomic(out, {"benchmark": "index_million_first_query", "config": {
            "n_train": args.n_train, "query": test[0], "page_cache": "as left by earlier runs (not dropped)",
            "cpus": os.cpu_count(), "argv": sys.argv[1:], "load_average_1_5_15": list(os.getloadavg())}, "figures": runs})
        console.print(f"wrote {out}")
        return
    sample = np.sort(np.random.default_rng(args.seed + 1).choice(args.n_train, 1000, replace=False))
    sample_texts = [repeated_at(distinct, int(i)) for i in sample]
    del distinct, reviews, keep, held  # the querying process keeps no training texts (released before the index opens)
    figures = measure(args, folders, sample, sample_texts, test, batch)
    disk = sum(f.stat().st_size for f in (Path(args.workdir) / f"index-n{args.n_train}").rglob("*") if f.is_file())
    figures.update(build_s=build_s, disk_bytes=disk, bytes_per_text=disk / args.n_train)
    table = Table(title=f"TracIn-WE index over {args.n_train:,} real texts ({n_distinct:,} distinct passages), "
                        f"BERT-small, float16, {args.threads} threads")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int)
                      and not isinstance(value, bool) else str(value))
    console.print(table)
    config = {
        "n_train": args.n_train, "n_distinct": n_distinct, "n_test": args.n_test, "singles": args.singles,
        "batch": args.batch, "window_words": WINDOW, "data": "every bundled corpus: documents + sentences "
        "(windows of <= 32 words), deduped, repeats suffixed ' (2)', ...; queries: held-out Rotten Tomatoes snippets",
        "model": f"BERT-small from scratch (2 layers, hidden 128), {args.train_steps} SGD steps on Rotten Tomatoes; "
                 "checkpoints half way and at the end; labels: final checkpoint's predictions",
        "loss_first20_last20": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "max_length": 64, "dtype": "float16", "segment_size": args.segment_size, "k": 10, "repeats": args.repeats,
        "page_cache": "warm", "torch_threads": args.threads,
        "search_threads": searcher.search_threads(), "prune_group": searcher.PRUNE_GROUP,
        "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "argv": sys.argv[1:], "cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.out}.json"
    write_json_atomic(out, {"benchmark": "index_million", "config": config, "figures": figures,
                            "targets": {"single_search_s_mean_on": "<= 0.25", "search20_s_on": "<= 1",
                                        "peak_rss_single_and_20_bytes": "< 2 GB",
                                        f"search{args.batch}_over_one": f"well under {args.batch}"}})
    console.print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
