"""The LM index at scale (>= 100,000 real documents) and on wide decoders (rows of C x d, d >= 1,024, PCA + exact re-rank).

Documents: distinct short real texts of the bundled corpora (Rotten Tomatoes snippets, SMS, tweets, BBC News
sentences, then 14-word windows of 20 Newsgroups and Reuters R8 to reach the count), 4-30 words, 20-160
characters, de-duplicated (case- and space-insensitive), shuffled with the seed; nothing is repeated. Queries:
20 held-out snippets cut into a prompt (first 3 words) and the completion to explain.

``--part scale``: a GPT-2 2 x ``--width`` (BPE of 2,000 tokens) trained from scratch for one epoch on the first
``--n-train`` documents (`train_decoder`, 2 checkpoints), max_length ``--max-length``; indexes of ``--n-docs``
documents: TracIn-WE-Top10 float16, and full TracIn-WE float16 with a PCA projection of ``--pca-dim`` (the same
index searched without the projection is the exact full-float16 index: the same segment files, less the projected
ones; ``--modes top10,float16,pca`` also builds that one on its own; modes can run in parallel processes). Per
mode: build time, build / capture (capture rate measured on a 2,000-document slice), bytes per document on disk,
and, in a fresh process that opens the index (`Index.open` reloads the checkpoints), the search latency of 1 and 20
captured queries, ``index.search`` of the 20 query documents (capture included), ``index.query(words=5)``, and that
process's peak RSS. Exactness: the projected search against the exact one over all documents (recall@10, ties
counted), and on an index of a random 5,000-document subset every mode against brute-force ``TracInWE.scores``.

``--part wide``: per ``--wide WIDTH:N_DOCS``, a 1-layer GPT-2 of that width trained for 8 AdamW steps on 256
documents (2 checkpoints, max_length 32), full TracIn-WE rows of C x d stored float16 with a PCA of ``--wide-pca``
dims, searched with the projection (default candidates and ``--small-candidates``) and without (exact): bytes per
document, latency, recall@10 of the projected search against the exact one, and the PCA fit re-timed on the stored
rows of 1,024 documents.

Usage (each part merges its key into the JSON; run them one after the other or side by side)::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 19 python benchmarks/bench_lm_index_scale.py --part scale
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 19 python benchmarks/bench_lm_index_scale.py --part wide
    python benchmarks/bench_lm_index_scale.py --part scale --n-docs 3000 --n-train 1000 --subset 1000 --out quick

Prints tables and writes ``benchmarks/results/lm_index_scale.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
SHORT = ["rotten-tomatoes", "sms-spam", "twitter-sentiment"]
WINDOWED = ["20newsgroups", "reuters-r8"]
WINDOW = 14


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def snippets(needed: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """At least ``needed`` distinct real snippets (all short texts and BBC sentences first, then windows), shuffled."""
    from tracinwe.data.bundled import load_bundled

    seen: set[str] = set()
    out: list[str] = []
    counts: dict[str, int] = {}

    def add(source: str, texts) -> None:
        for t in texts:
            t = " ".join(t.split())
            key = t.lower()
            if 4 <= len(t.split(" ")) <= 30 and 20 <= len(t) <= 160 and key not in seen:
                seen.add(key)
                out.append(t)
                counts[source] = counts.get(source, 0) + 1

    for name in SHORT:
        add(name, load_bundled(name).texts)
    add("bbc-news sentences", (s for doc in load_bundled("bbc-news").texts for s in re.split(r"(?<=[.!?])\s+", doc)))
    for name in WINDOWED:
        if len(out) >= needed:
            break
        words = (doc.split() for doc in load_bundled(name).texts)
        add(f"{name} {WINDOW}-word windows",
            (" ".join(w[i : i + WINDOW]) for w in words for i in range(0, len(w) - WINDOW + 1, WINDOW)))
    if len(out) < needed:
        raise SystemExit(f"only {len(out)} distinct snippets for {needed}")
    order = np.random.default_rng(seed).permutation(len(out))
    return [out[i] for i in order], counts


def split(text: str) -> dict:
    words = text.split(" ")
    return {"prompt": " ".join(words[:3]), "completion": " " + " ".join(words[3:])}


def fits(tokenizer, texts: list[str], max_length: int) -> list[str]:
    """The texts of at most ``max_length`` tokens (the facade refuses longer ones)."""
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    return [t for t, n in zip(texts, lengths) if n <= max_length]


def folder_bytes(path: Path) -> dict[str, int]:
    """Bytes on disk: everything, and the projection's files (projected arrays + basis)."""
    files = [f for f in path.rglob("*") if f.is_file()]
    proj = [f for f in files if f.name in ("rows_proj.npy", "dense_proj.npy") or f.parent.name == "projection"]
    return {"total": sum(f.stat().st_size for f in files), "projection": sum(f.stat().st_size for f in proj)}


def recall(found_rows: np.ndarray, found_scores: np.ndarray, ref_scores: np.ndarray, tol: float) -> float:
    """Share of returned (exactly rescored) rows scoring at least the reference's k-th best (ties count)."""
    return float((found_scores >= ref_scores[:, -1:] - tol).mean())


def compare(found, ref) -> dict:
    """Recall@k of ``found`` against the exact ``ref`` (both TopInfluences) and the largest score difference."""
    tol = 1e-6 * max(np.abs(ref.proponent_scores).max(), np.abs(ref.opponent_scores).max())
    same = np.mean([np.array_equal(a, b) for a, b in zip(found.proponent_indices, ref.proponent_indices)])
    return {"recall_proponents": recall(found.proponent_indices, found.proponent_scores, ref.proponent_scores, tol),
            "recall_opponents": recall(found.opponent_indices, -found.opponent_scores, -ref.opponent_scores, tol),
            "same_proponent_lists": float(same)}


def against_brute(found, scores: np.ndarray, k: int) -> dict:
    """Recall@k (ties count) and the largest score error relative to the largest |score|, against the full matrix."""
    rows = np.arange(scores.shape[0])[:, None]
    out = {}
    tol = 1e-6 * np.abs(scores).max()
    for name, idx, got, sign in [("proponents", found.proponent_indices, found.proponent_scores, 1.0),
                                 ("opponents", found.opponent_indices, found.opponent_scores, -1.0)]:
        kth = -np.sort(-sign * scores, axis=1)[:, k - 1 : k]
        out[f"recall_{name}"] = float((sign * scores[rows, idx] >= kth - tol).mean())
        out[f"max_rel_error_{name}"] = float(np.abs(got - scores[rows, idx]).max() / np.abs(scores).max())
    return out


# -- the querying process ----------------------------------------------------------------------------------------


def query_worker(index_path: str, queries_path: str, out_path: str, threads: int, k: int, candidates: str) -> None:
    """Open the index, time searches and queries, save their results; print one JSON line (timings, peak RSS)."""
    torch.set_num_threads(threads)
    from tracinwe.index import Index

    queries = json.loads(Path(queries_path).read_text())
    t0 = time.perf_counter()
    index = Index.open(index_path)
    report: dict = {"open_s": time.perf_counter() - t0, "rss_after_open_mb": rss_now_mb()}
    t0 = time.perf_counter()
    records = index.tracin.capture(queries)
    report["capture_20_ms"] = 1000 * (time.perf_counter() - t0)
    saved = {}
    settings = [("exact", False, None)]
    if index.projection_dim is not None:
        settings += [(f"projected-{c}", True, None if c == "default" else int(c)) for c in candidates.split(",")]
    for name, projected, cand in settings:
        kw = {"k": k, "use_projection": projected, "candidates": cand}
        index.search(records, **kw)  # warm: maps and first-touch checksums
        batch = []
        for _ in range(3):
            t0 = time.perf_counter()
            found = index.search(records, **kw)
            batch.append(time.perf_counter() - t0)
        singles = []
        for i in range(len(queries)):
            one = [r.select([i]) for r in records]
            t0 = time.perf_counter()
            index.search(one, **kw)
            singles.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search(queries, **kw)
        docs_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = index.query(queries, None, k=k, words=5, use_projection=projected, candidates=cand)
        query_s = time.perf_counter() - t0
        assert [n.row for n in results[0].proponents] == found.proponent_indices[0].tolist()
        report[name] = {"search_1_ms": 1000 * statistics.median(singles), "search_1_max_ms": 1000 * max(singles),
                        "search_20_ms": 1000 * statistics.median(batch), "search_20_docs_ms": 1000 * docs_s,
                        "query_20_words_ms": 1000 * query_s}
        for key in ("proponent_indices", "proponent_scores", "opponent_indices", "opponent_scores"):
            saved[f"{name}.{key}"] = getattr(found, key)
    np.savez(out_path, **saved)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(report))


def rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(index_path: Path, queries: list, threads: int, k: int, candidates: str = "default") -> tuple[dict, dict]:
    """Run `query_worker` in a fresh process; returns its report and its results by setting."""
    from tracinwe.results import TopInfluences

    qfile, out = index_path.parent / f"{index_path.name}-queries.json", index_path.parent / f"{index_path.name}-found.npz"
    qfile.write_text(json.dumps(queries))
    cmd = [sys.executable, __file__, "--query-worker", str(index_path), str(qfile), str(out), "--threads", str(threads),
           "--k", str(k), "--candidates", candidates]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"query worker failed:\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    data = np.load(out)
    names = {key.split(".")[0] for key in data.files}
    found = {n: TopInfluences(*(data[f"{n}.{f}"] for f in ("proponent_indices", "proponent_scores", "opponent_indices",
                                                              "opponent_scores"))) for n in names}
    return report, found


# -- part 1: scale -------------------------------------------------------------------------------------------------


def build(path: Path, tw, docs: list, **kw) -> tuple[object, float]:
    from tracinwe.index import Index

    t0 = time.perf_counter()
    index = Index.build(path, tw, docs, None, **kw)
    return index, time.perf_counter() - t0


def part_scale(args, work: Path) -> dict:
    from tracinwe import TracInWE
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    started, loads = time.perf_counter(), {"start": load()}
    pool, sources = snippets(int((args.n_docs + args.n_test) * 2.0), args.seed)
    config = DecoderConfig(n_layer=2, n_embd=args.width, n_head=2, n_positions=args.max_length, vocab_size=2000,
                           epochs=1.0, batch_size=32, num_checkpoints=2, max_length=args.max_length, seed=args.seed)
    t0 = time.perf_counter()
    run = train_decoder(pool[: args.n_train], work / "run", config)
    train_s = time.perf_counter() - t0
    usable = fits(run.tokenizer, pool, args.max_length)
    if len(usable) < args.n_docs + args.n_test:
        raise SystemExit(f"only {len(usable)} snippets fit max_length {args.max_length}")
    docs, queries = usable[: args.n_docs], [split(t) for t in usable[args.n_docs : args.n_docs + args.n_test]]
    print(f"{len(docs)} documents, model trained in {train_s:.0f} s; load {load()}", file=sys.stderr, flush=True)
    subset = np.sort(np.random.default_rng(args.seed).choice(len(docs), size=min(args.subset, len(docs)), replace=False))
    sub_docs = [docs[i] for i in subset]
    every = {"top10": ("top10-float16", 10, {"dtype": "float16"}), "float16": ("float16", None, {"dtype": "float16"}),
             "pca": (f"float16+pca{args.pca_dim}", None, {"dtype": "float16", "projection_dim": args.pca_dim})}
    modes = [every[m] for m in args.modes.split(",")]
    common = {"n_docs": len(docs), "n_test": len(queries), "k": args.k, "sources": sources, "subset_size": len(sub_docs),
              "model": {"n_layer": 2, "n_embd": args.width, "vocab_size": 2000, "checkpoints": 2,
                        "max_length": args.max_length, "epochs": 1.0, "n_train": args.n_train, "train_s": train_s,
                        "learning_rates": [float(x) for x in run.learning_rates]}}
    rows = []
    for name, top_k, kw in modes:
        tw = TracInWE.from_checkpoints(run.checkpoints, max_length=args.max_length, top_k=top_k, batch_size=128)
        t0 = time.perf_counter()
        tw.capture(docs[:2000])
        capture_rate = min(2000, len(docs)) / (time.perf_counter() - t0)
        _, build_s = build(work / name, tw, docs, **kw)
        size = folder_bytes(work / name)
        loads[f"{name} built"] = load()
        report, found = run_worker(work / name, queries, args.threads, args.k)
        loads[f"{name} queried"] = load()
        row = {"mode": name, "n_docs": len(docs), "build_s": build_s, "build_docs_per_s": len(docs) / build_s,
               "capture_docs_per_s": capture_rate, "build_over_capture": build_s / (len(docs) / capture_rate),
               "bytes_per_doc": size["total"] / len(docs),
               "bytes_per_doc_without_projection": (size["total"] - size["projection"]) / len(docs), "worker": report}
        if "projected-default" in found:
            row["projected_vs_exact"] = compare(found["projected-default"], found["exact"])
        # brute force on a random subset: an index of those documents against tw.scores
        sub_index, sub_build_s = build(work / f"{name}-subset", tw, sub_docs, progress=False, **kw)
        t0 = time.perf_counter()
        scores = tw.scores(sub_docs, None, queries, None)
        row["subset"] = {"n_docs": len(sub_docs), "build_s": sub_build_s, "brute_force_s": time.perf_counter() - t0,
                         "exact": against_brute(sub_index.search(queries, k=args.k, use_projection=False), scores, args.k)}
        if kw.get("projection_dim"):
            row["subset"]["projected"] = against_brute(sub_index.search(queries, k=args.k, use_projection=True), scores, args.k)
        shutil.rmtree(work / f"{name}-subset", ignore_errors=True)
        row["load_average"], row["process_s"] = dict(loads), time.perf_counter() - started
        rows.append(row)
        merge(RESULTS / f"{args.out}.json", "scale", {**common, "rows": [row]}, command(), by="mode")  # a row at a time
        print(f"{name}: built in {build_s:.0f} s; load {load()}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(work / name, ignore_errors=True)
    return {**common, "rows": rows}


def print_scale(part: dict) -> None:
    print(f"\nLM index at scale: {part['n_docs']:,} real documents, GPT-2 2x{part['model']['n_embd']}, 2 checkpoints, "
          f"max_length {part['model']['max_length']}, {part['n_test']} completions, top-{part['k']}")
    print(f"{'mode':<22} {'build s':>8} {'doc/s':>6} {'b/capt':>6} {'B/doc':>7} {'1 q ms':>7} {'20 q ms':>8} "
          f"{'20 docs ms':>10} {'query ms':>9} {'RSS MB':>7} {'recall vs exact':>15} {'subset recall':>13}")
    for r in part["rows"]:
        w = r["worker"]
        for setting in [s for s in ("exact", "projected-default") if s in w]:
            s = w[setting]
            proj = setting != "exact"
            name = r["mode"] if proj or "pca" not in r["mode"] else r["mode"].split("+")[0] + " (no projection)"
            bpd = r["bytes_per_doc"] if proj or "pca" not in r["mode"] else r["bytes_per_doc_without_projection"]
            vs = r.get("projected_vs_exact") if proj else None
            vs_s = f"{vs['recall_proponents']:.3f}/{vs['recall_opponents']:.3f}" if vs else "exact"
            sub = r["subset"]["projected" if proj else "exact"]
            print(f"{name:<22} {r['build_s']:>8.0f} {r['build_docs_per_s']:>6.0f} {r['build_over_capture']:>6.2f} "
                  f"{bpd:>7.0f} {s['search_1_ms']:>7.1f} {s['search_20_ms']:>8.0f} {s['search_20_docs_ms']:>10.0f} "
                  f"{s['query_20_words_ms']:>9.0f} {w['peak_rss_mb']:>7.0f} {vs_s:>15} "
                  f"{sub['recall_proponents']:.3f}/{sub['recall_opponents']:.3f}")


# -- part 2: wide decoders -----------------------------------------------------------------------------------------


def part_wide(args, work: Path) -> dict:
    from tracinwe import TracInWE
    from tracinwe.index import projection
    from tracinwe.index.storage import SEGMENTS
    from tracinwe.training.causal_lm import DecoderConfig, train_bpe_tokenizer, train_decoder

    started, rows = time.perf_counter(), []
    common = {"n_test": args.n_test, "k": args.k, "max_length": 32, "n_layer": 1,
              "training": "8 AdamW steps (lr 3e-3, batch 32) on 256 of the documents, checkpoints after steps 4 and 8"}
    sizes = [tuple(int(x) for x in spec.split(":")) for spec in args.wide.split(",")]
    pool, sources = snippets(int((max(n for _, n in sizes) + args.n_test) * 1.2), args.seed + 1)
    common["sources"] = sources
    for width, n_docs in sizes:
        loads = {"start": load()}
        tokenizer = train_bpe_tokenizer(pool[: n_docs + args.n_test], 2000)
        usable = fits(tokenizer, pool, 32)
        docs, queries = usable[:n_docs], [split(t) for t in usable[n_docs : n_docs + args.n_test]]
        config = DecoderConfig(n_layer=1, n_embd=width, n_head=width // 64, n_positions=32, epochs=1.0, batch_size=32,
                               num_checkpoints=2, max_length=32, seed=args.seed)
        t0 = time.perf_counter()
        run = train_decoder(docs[:256], work / f"run-{width}", config, tokenizer=tokenizer)
        train_s = time.perf_counter() - t0
        tw = TracInWE.from_checkpoints(run.checkpoints, max_length=32, batch_size=64)
        t0 = time.perf_counter()
        tw.capture(docs[:256])
        capture_rate = 256 / (time.perf_counter() - t0)
        name = f"wide{width}"
        _, build_s = build(work / name, tw, docs, dtype="float16", projection_dim=args.wide_pca, chunk_size=2048)
        size = folder_bytes(work / name)
        loads["built"] = load()
        report, found = run_worker(work / name, queries, args.threads, args.k, f"default,{args.small_candidates}")
        loads["queried"] = load()
        # the PCA fit re-timed on the stored rows of the first 1,024 documents (the build fits it on a seeded sample)
        seg = work / name / SEGMENTS / "seg-000000"
        first = np.load(seg / "postings.npy") < 1024
        sample = np.load(seg / "rows.npy", mmap_mode="r")[first].astype(np.float32).reshape(int(first.sum()), -1)
        t0 = time.perf_counter()
        projection.pca_basis(sample, args.wide_pca, args.seed)
        pca_s = time.perf_counter() - t0
        row = {"width": width, "row_dim": 2 * width, "n_docs": len(docs), "train_s": train_s, "train_steps": 8,
               "build_s": build_s, "build_docs_per_s": len(docs) / build_s, "capture_docs_per_s": capture_rate,
               "build_over_capture": build_s / (len(docs) / capture_rate), "pca_dim": args.wide_pca,
               "pca_fit_s": pca_s, "pca_fit_rows": int(sample.shape[0]),
               "bytes_per_doc": size["total"] / len(docs),
               "bytes_per_doc_without_projection": (size["total"] - size["projection"]) / len(docs),
               "worker": report, "load_average": loads,
               "projected_vs_exact": {n: compare(f, found["exact"]) for n, f in found.items() if n != "exact"}}
        rows.append(row)
        merge(RESULTS / f"{args.out}.json", "wide", {**common, "rows": [row]}, command(), by="width")  # a width at a time
        print(f"{name}: built in {build_s:.0f} s; load {load()}", file=sys.stderr, flush=True)
        shutil.rmtree(work / name, ignore_errors=True)
    return {**common, "total_s": time.perf_counter() - started, "rows": rows}


def print_wide(part: dict) -> None:
    print(f"\nLM index on wide decoders: GPT-2 1 layer, 2 checkpoints, rows of C x d in float16, {part['n_test']} completions,"
          f" top-{part['k']}")
    print(f"{'width':>5} {'docs':>6} {'search':<18} {'build s':>8} {'B/doc':>8} {'1 q ms':>8} {'20 q ms':>8} "
          f"{'query ms':>9} {'RSS MB':>7} {'recall@10 +/-':>14} {'PCA fit s':>9}")
    for r in part["rows"]:
        w = r["worker"]
        for setting in [s for s in w if isinstance(w[s], dict)]:
            s = w[setting]
            exact = setting == "exact"
            vs = r["projected_vs_exact"].get(setting)
            label = "no projection" if exact else f"PCA {r['pca_dim']}, {setting.split('-')[1]} cand."
            bpd = r["bytes_per_doc_without_projection"] if exact else r["bytes_per_doc"]
            rec = "exact" if exact else f"{vs['recall_proponents']:.3f}/{vs['recall_opponents']:.3f}"
            print(f"{r['width']:>5} {r['n_docs']:>6} {label:<18} {r['build_s']:>8.0f} {bpd:>8.0f} {s['search_1_ms']:>8.1f} "
                  f"{s['search_20_ms']:>8.0f} {s['query_20_words_ms']:>9.0f} {w['peak_rss_mb']:>7.0f} {rec:>14} "
                  f"{r['pca_fit_s']:>9.1f}")


# -- main ------------------------------------------------------------------------------------------------------------


def command() -> dict:
    return {"command": " ".join(sys.argv), "machine": {
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}}


def merge(out: Path, key: str, value: dict, common: dict, by: str | None = None) -> dict:
    """Read-modify-write ``out`` under a lock, so that parts (and rows keyed by ``by``) can run side by side."""
    from tracinwe.io import write_json_atomic

    with open(Path(tempfile.gettempdir()) / f"{out.name}.lock", "w") as lock:  # never removed: a lock must stay put
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(out.read_text()) if out.exists() else {"benchmark": "bench_lm_index_scale"}
        old = data.get(key, {})
        if by:
            rows = {r[by]: r for r in old.get("rows", [])}
            rows.update({r[by]: r for r in value["rows"]})
            value = {**value, "rows": sorted(rows.values(), key=lambda r: r[by], reverse=by == "mode")}
            common = {**common, "commands": sorted(set(old.get("commands", [])) | {common["command"]})}
        data[key] = {**common, **value}
        write_json_atomic(out, data)
    return data[key]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--query-worker":
        p = argparse.ArgumentParser()
        p.add_argument("index")
        p.add_argument("queries")
        p.add_argument("out")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--k", type=int, default=10)
        p.add_argument("--candidates", default="default")
        a = p.parse_args(sys.argv[2:])
        return query_worker(a.index, a.queries, a.out, a.threads, a.k, a.candidates)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["scale", "wide"], required=True)
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument("--modes", default="top10,pca", help="of top10, float16, pca (run them side by side if you like)")
    parser.add_argument("--wide", default="1024:10000,2048:5000", help="WIDTH:N_DOCS,...")
    parser.add_argument("--wide-pca", type=int, default=128)
    parser.add_argument("--small-candidates", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the 100k indexes (in the temporary folder)")
    parser.add_argument("--out", default="lm_index_scale")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix=f"bench-lm-index-{args.part}-"))
    try:
        part = part_scale(args, work) if args.part == "scale" else part_wide(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = RESULTS / f"{args.out}.json"
    merged = merge(out, args.part, part, command(), by="mode" if args.part == "scale" else "width")
    (print_scale if args.part == "scale" else print_wide)(merged)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
