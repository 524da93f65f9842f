"""The index's query path on real text: 20 test x 50,000 Rotten Tomatoes snippets, pruning off and on, side by side.

Model: the paper's BERT-small shape (2 layers, hidden 128, 2 heads) from scratch on
the MiniLM vocabulary, trained briefly with SGD + momentum on real snippets;
two checkpoints (half way and end of that training), max_length 64. Two
indexes: full TracIn-WE and TracIn-WE-Top10 ([CLS]/[SEP] kept).

Training set: bundled Rotten Tomatoes (deduplicated) minus the 20 test
snippets, repeated up to ``--n-train`` with a suffix " (2)", " (3)", ... per
repeat (the suffix changes the tokens, so repeats are near-duplicates, not
copies). Measured in one run, per index, with pruning off (the full token-major
screen) and on (MaxScore-style bounds, `tracinwe.index.pruning`):

* capture of the 20 queries as ``index.query`` does it (``capture_queries``: no separate
  prediction pass) and as ``tw.capture`` does; ``index.search`` (exact top-10, batch of 20);
* ``index.query(words=0)`` and ``index.query`` (5 words per neighbour, the default);
* a capture followed by ``index.search`` in one call (what ``query`` does before its words): ``query`` less that,
  over ``search``, plus one, is what the words and results add (``query_added_over_search``), beside ``query`` less
  the capture timed alone, over ``search`` (``query_less_capture_over_search``);
* postings read by the search (rows whose product was computed);
* top-10 agreement with the full (20 x N) score matrix (``index.scores``, every
  row scored), that matrix checked against brute-force ``tw.scores`` (a fresh
  capture) on ``--brute-queries`` test texts x a seeded ``--brute-rows`` sample of
  the training texts (a full brute force costs a second capture of all N);
  and pruned == unpruned (rows, scores, words) on all 20.

Timings interleave: every round calls each measured function once in turn (``--repeats`` rounds after a warm-up),
so all of them run under the same load; the fastest and the median of the rounds are reported.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_index_query.py --threads 2
    python benchmarks/bench_index_query.py --n-train 5000 --out index_query-quick   # smoke run

Builds are cached in ``--workdir`` (reused when present). Prints a table and
writes ``benchmarks/results/index_query.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def train_bert(tokenizer, texts, labels, seed: int, lr: float, steps: int, batch: int, workdir: Path):
    """``steps`` of SGD + momentum 0.9 on a from-scratch BERT-small; two checkpoints (half way, end) saved in ``workdir``."""
    from transformers import BertForSequenceClassification

    from tracinwe.models.small import bert_small_config

    folders = [workdir / f"checkpoint-{steps // 2}", workdir / f"checkpoint-{steps}"]
    if all((f / "config.json").is_file() for f in folders):
        return folders, json.loads((workdir / "losses.json").read_text())
    torch.manual_seed(seed)
    model = BertForSequenceClassification(bert_small_config(2, len(tokenizer), 64))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = np.random.default_rng(seed).permutation(len(texts))
    losses = []
    model.train()
    for step in range(steps):
        idx = order[(step * batch) % len(order):][:batch]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([labels[i] for i in idx])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step + 1 in (steps // 2, steps):
            folder = folders[0] if step + 1 == steps // 2 else folders[1]
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    (workdir / "losses.json").write_text(json.dumps(losses))
    return folders, losses


def timed_rounds(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, float], dict]:
    """(fastest seconds, median seconds, last result) per function of ``fns``, over ``repeats`` rounds that call every
    function once in turn, after one warm-up round. The machine is shared: interleaving puts every function under the
    same load, and the minimum is the least disturbed figure, the median the typical one."""
    last = {name: fn() for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - t)
    return ({n: min(v) for n, v in times.items()}, {n: float(np.median(v)) for n, v in times.items()}, last)


#: Scores closer than this share of the largest are a tie: the unpruned screen sums in float32 (the pruned one in
#: float64), so either may order such rows either way.
TIE = 1e-5


def same_hits(a, b, matrix: np.ndarray) -> tuple[bool, int]:
    """(same top k up to ties, rows that differ): the scores agree to float32 rounding, and every row that differs has a
    score in ``matrix`` tied with the other's (``TIE``)."""
    tol = TIE * float(np.abs(matrix).max())
    same, swapped = True, 0
    for ra, rb, sa, sb in ((a.proponent_indices, b.proponent_indices, a.proponent_scores, b.proponent_scores),
                           (a.opponent_indices, b.opponent_indices, a.opponent_scores, b.opponent_scores)):
        same &= bool(np.allclose(sa, sb, rtol=0, atol=tol))
        q, j = np.nonzero(ra != rb)
        swapped += int(q.size)
        same &= bool((np.abs(matrix[q, ra[q, j]] - matrix[q, rb[q, j]]) <= tol).all())
    return same, swapped


def same_words(a, b) -> bool:
    """The same words for every neighbour both found (rows swapped in ties are `same_hits`'), contributions equal to
    float64 rounding."""
    for ra, rb in zip(a, b):
        for na, nb in zip(ra.proponents + ra.opponents, rb.proponents + rb.opponents):
            if na.row != nb.row:
                continue
            if [w.token_id for w in na.words] != [w.token_id for w in nb.words]:
                return False
            if not np.allclose([w.contribution for w in na.words], [w.contribution for w in nb.words], rtol=1e-9, atol=0):
                return False
    return True


def agreement(hits, brute: np.ndarray) -> tuple[float, float, float]:
    """Top-10 rows equal to those of a full score matrix (share; and share up to ties, `TIE`), and the largest
    returned-score error relative to max |score|."""
    from tracinwe.results import TopInfluences

    nb, scale = brute.shape[0], float(np.abs(brute).max())
    ref = TopInfluences.from_scores(brute, 10)
    rows = np.arange(nb)[:, None]
    pro, opp = hits.proponent_indices[:nb], hits.opponent_indices[:nb]
    same = ((pro == ref.proponent_indices).mean() + (opp == ref.opponent_indices).mean()) / 2
    tied = ((np.abs(brute[rows, pro] - brute[rows, ref.proponent_indices]) <= TIE * scale).mean()
            + (np.abs(brute[rows, opp] - brute[rows, ref.opponent_indices]) <= TIE * scale).mean()) / 2
    err = max(np.abs(brute[rows, pro] - hits.proponent_scores[:nb]).max(),
              np.abs(brute[rows, opp] - hits.opponent_scores[:nb]).max()) / scale
    return float(same), float(tied), float(err)


def measure(index, tw, test_texts, brute, repeats: int) -> dict:
    """Latencies with pruning off and on, postings read, agreement with brute force and between the two."""
    from tracinwe.index.queries import capture_queries

    records = tw.capture(test_texts)
    fns = {"tw_capture_s": lambda: tw.capture(test_texts),  # a prediction pass, then every checkpoint
           "query_capture_s": lambda: capture_queries(tw, list(test_texts), None, None)}
    for name, prune in (("off", False), ("on", True)):
        fns[f"search_s_{name}"] = lambda p=prune: index.search(records, k=10, prune=p)
        fns[f"capture_then_search_s_{name}"] = lambda p=prune: index.search(  # what query does before its words
            capture_queries(tw, list(test_texts), None, None), k=10, prune=p)
        fns[f"query_words0_s_{name}"] = lambda p=prune: index.query(test_texts, k=10, words=0, prune=p)
        fns[f"query_s_{name}"] = lambda p=prune: index.query(test_texts, k=10, prune=p)
    fastest, median, last = timed_rounds(fns, repeats)
    out = dict(fastest)
    hits = {"off": last["search_s_off"], "on": last["search_s_on"]}
    results = {"off": last["query_s_off"], "on": last["query_s_on"]}
    for name, prune in (("off", False), ("on", True)):
        search = index.searcher.start(records, 10, prune=True)
        index.searcher.screen(search)
        count = search.count
        out[f"postings_read_{name}"] = count.rows_read if prune else count.rows_total
        out[f"dense_rows_read_{name}"] = count.dense_read if prune else count.dense_total
        for stat, figures in (("", fastest), ("median_", median)):
            less_capture = figures[f"query_s_{name}"] - figures["query_capture_s"]
            out[f"{stat}query_over_search_{name}"] = figures[f"query_s_{name}"] / figures[f"search_s_{name}"]
            out[f"{stat}words_cost_s_{name}"] = figures[f"query_s_{name}"] - figures[f"query_words0_s_{name}"]
            out[f"{stat}query_less_capture_over_search_{name}"] = less_capture / figures[f"search_s_{name}"]
            floor = figures["query_capture_s"] + figures[f"search_s_{name}"]  # what query cannot avoid: capture, search
            out[f"{stat}query_over_capture_plus_search_{name}"] = figures[f"query_s_{name}"] / floor
            # what query adds to a capture followed by a search (its words, its results), in units of search: the
            # search then runs right after a capture, as in query, with the caches the capture left
            added = figures[f"query_s_{name}"] - figures[f"capture_then_search_s_{name}"]
            out[f"{stat}query_added_over_search_{name}"] = 1 + added / figures[f"search_s_{name}"]
        out[f"median_search_s_{name}"], out[f"median_query_s_{name}"] = median[f"search_s_{name}"], median[f"query_s_{name}"]
        (out[f"top10_agreement_matrix_{name}"], out[f"top10_agreement_up_to_ties_{name}"],
         out[f"max_rel_diff_matrix_{name}"]) = agreement(hits[name], brute)
    same, out["rows_swapped_in_ties"] = same_hits(hits["on"], hits["off"], brute)
    out["pruned_equals_unpruned_up_to_ties"] = same
    out["pruned_equals_unpruned_words"] = same_words(results["on"], results["off"])
    out["search_speedup"] = out["search_s_off"] / out["search_s_on"]
    out["query_speedup"] = out["query_s_off"] / out["query_s_on"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--brute-queries", type=int, default=5, help="test texts scored by brute-force tw.scores")
    parser.add_argument("--brute-rows", type=int, default=1000, help="training rows (a seeded sample) scored by tw.scores")
    parser.add_argument("--indexes", default="full,top10", help="comma-separated: full, top10")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--segment-size", type=int, default=16384)
    parser.add_argument("--workdir", default="/tmp/tracinwe-bench-index-query")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--retain-freed-memory", action="store_true",
                        help="glibc keeps freed memory (tracinwe.capture.allocator), as the command line's queries do")
    parser.add_argument("--out", default="index_query")
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
    model_dir = Path(args.workdir) / f"bert-s{args.seed}-steps{args.train_steps}"
    work = Path(args.workdir) / f"n{args.n_train}-s{args.seed}-steps{args.train_steps}"
    model_dir.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe()
    order = np.random.default_rng(args.seed).permutation(len(data))
    test, pool = data.subset(order[: args.n_test]), data.subset(order[args.n_test :])
    reps = -(-args.n_train // len(pool))
    train_texts = [t if r == 0 else f"{t} ({r + 1})" for r in range(reps) for t in pool.texts][: args.n_train]
    train_labels = (pool.labels * reps)[: args.n_train]
    train_ids = [f"{i}#{r}" for r in range(reps) for i in pool.ids][: args.n_train]
    t = time.perf_counter()
    folders, losses = train_bert(tokenizer, pool.texts, pool.labels, args.seed, 0.05, args.train_steps, 32, model_dir)
    console.print(f"BERT-small: {time.perf_counter() - t:.1f} s (loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f})")
    lrs = [0.05, 0.05]
    figures, builds = {}, {}
    unknown = set(args.indexes.split(",")) - {"full", "top10"}
    if unknown:
        parser.error(f"--indexes: unknown kinds {sorted(unknown)}; pass full, top10 or full,top10")
    for name, top_k in [(n, t) for n, t in (("full", None), ("top10", 10)) if n in args.indexes.split(",")]:
        tw = TracInWE.from_checkpoints([str(f) for f in folders], lrs, top_k=top_k, max_length=64, batch_size=128)
        tw.keep_loaded()  # a server's set-up: queries do not reload the checkpoint folders
        path = work / f"index-{name}"
        t = time.perf_counter()
        index = Index.open(path, tw) if (path / "manifest.json").exists() else Index.build(
            path, tw, train_texts, train_labels, ids=train_ids, chunk_size=args.segment_size, progress=True)
        builds[name] = time.perf_counter() - t
        if args.build_only:
            continue
        sample = np.sort(np.random.default_rng(args.seed + 1).choice(args.n_train, args.brute_rows, replace=False))
        t = time.perf_counter()
        brute = tw.scores([train_texts[i] for i in sample], [train_labels[i] for i in sample], test.texts[: args.brute_queries])
        builds[f"{name}_brute_sample_s"] = time.perf_counter() - t
        matrix = index.scores(test.texts)  # the unpruned screen over every row, checked against brute force on the sample
        figures[name] = measure(index, tw, test.texts, matrix, args.repeats)
        figures[name]["score_matrix_vs_brute_sample_max_rel_diff"] = float(
            np.abs(matrix[: args.brute_queries, sample] - brute).max() / np.abs(brute).max())
        console.print(f"{name}: build/open {builds[name]:.1f} s")
    if args.build_only:
        return
    table = Table(title=f"Index query path: {args.n_test} test x {args.n_train} Rotten Tomatoes snippets "
                        f"({len(pool)} distinct, repeated with ' (r)' suffixes), BERT-small, {args.threads} threads")
    table.add_column("measure")
    for name in figures:
        for mode in ("off", "on"):
            table.add_column(f"{name} prune {mode}", justify="right")
    keys = ["search_s", "capture_then_search_s", "query_words0_s", "query_s", "query_over_search", "words_cost_s",
            "query_less_capture_over_search", "query_added_over_search", "median_query_added_over_search",
            "query_over_capture_plus_search", "median_search_s", "median_query_s", "median_words_cost_s",
            "median_query_less_capture_over_search",
            "postings_read", "dense_rows_read",
            "top10_agreement_matrix", "top10_agreement_up_to_ties", "max_rel_diff_matrix"]
    table.add_row("score matrix vs tw.scores sample", *[f"{figures[n]['score_matrix_vs_brute_sample_max_rel_diff']:.2g}"
                                                          for n in figures for _ in (0, 1)])
    table.add_row("query capture (s)", *[f"{figures[n]['query_capture_s']:.3f}" for n in figures for _ in (0, 1)])
    table.add_row("tw.capture (s)", *[f"{figures[n]['tw_capture_s']:.3f}" for n in figures for _ in (0, 1)])
    for key in keys:
        table.add_row(key, *[f"{figures[n][f'{key}_{m}']:.4g}" for n in figures for m in ("off", "on")])
    same = [f"{figures[n]['pruned_equals_unpruned_up_to_ties'] and figures[n]['pruned_equals_unpruned_words']} "
            f"({figures[n]['rows_swapped_in_ties']} tied rows swapped)" for n in figures for _ in (0, 1)]
    table.add_row("pruned == unpruned up to ties (rows, scores, words)", *same)
    console.print(table)
    config = {
        "n_train": args.n_train, "n_distinct_train": len(pool), "n_test": args.n_test, "brute_queries": args.brute_queries,
        "data": "bundled:rotten-tomatoes (deduped), repeats suffixed ' (2)', ' (3)', ...",
        "model": f"BERT-small from scratch (2 layers, hidden 128, MiniLM vocabulary), SGD momentum 0.9 lr 0.05 batch 32, "
                 f"{args.train_steps} steps; checkpoints at steps {args.train_steps // 2} and {args.train_steps}",
        "loss_first20_last20": [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))],
        "learning_rates": lrs, "max_length": 64, "segment_size": args.segment_size, "dtype": "float32", "k": 10,
        "builds_s": builds, "torch_threads": args.threads, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "argv": sys.argv[1:], "cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": "index_query", "config": config, "figures": figures,
               "targets": {"query_s_on (full)": "<= 0.3", "query_s_on (top10)": "<= 0.2", "query_over_search": "<= 1.2"}}
    out = RESULTS / f"{args.out}.json"
    from tracinwe.io import write_json_atomic
    write_json_atomic(out, payload)
    console.print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
