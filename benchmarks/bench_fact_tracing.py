"""Fact tracing and the tail-patch check on a decoder that recalls invented facts (as TrackStar / Bergson evaluate).

Corpus: `tracinwe.data.facts.synthetic_facts` with ``query_form="statement"``: ``--entities`` invented people x 4
attributes (birthplace, profession, employer, favourite colour), each fact stated in ``--docs-per-fact`` documents
with different templates, the first of which is always the query's own sentence ("<name> was born in Lisbon."),
mixed with ``--filler`` real Rotten Tomatoes snippets. The query is that sentence's prefix ("<name> was born in")
with the answer as completion (" Lisbon"): the form the decoder saw, so a gold document contains the query text
verbatim (which favours BM25). Model: a GPT-2 trained from scratch (`train_decoder`, AdamW, cosine schedule),
``--checkpoints`` checkpoints (their learning rates weight TracIn). Documents are cut at ``--max-length`` tokens
as training cut them.

Methods ranking the training documents of each fact query (loss on the completion): TracIn-WE and
TracIn-WE-Top10 (the `TracInWE` facade), BM25 (``bm25s``; query = prompt + completion, and prompt only),
last-layer TracIn (output side of ``lm_head``), target-rows and TracIn-WE+out (sparse output-side rows,
`lm_target_row_scores`), a TrackStar-like projected whole-model gradient cosine (Linear /
Conv1D weights, factored AdamW second-moment normalisation, ``--proj-dim`` dims), random. Metrics: MRR and
recall@10 of the gold documents over ``--queries`` queried facts (a seeded subset), all of them and those the
decoder recalls (greedy completion == answer); paired differences against BM25, TracIn-WE and TrackStar-like.

Tail patch: on ``--tail-queries`` recalled facts, one plain SGD step (``--tail-lr``) from the final checkpoint on
each of a method's top ``--tail-k`` proponents separately; mean change of log p(completion | prompt).

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 10 python benchmarks/bench_fact_tracing.py
    python benchmarks/bench_fact_tracing.py --run-dir runs/facts   # reuse (or create) a trained decoder folder
    python benchmarks/bench_fact_tracing.py --entities 60 --filler 50 --epochs 4 --queries 40 --out tmp/facts-smoke

Prints both tables and writes ``benchmarks/results/lm_fact_tracing.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def filler_pool(seed: int) -> list[str]:
    """Distinct real review snippets of 20-150 characters."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe()
    return [t for t in data.sample(len(data), seed=seed).texts if 20 <= len(t) <= 150]


def trained_run(args, corpus, folder: Path):
    """Train the decoder into ``folder`` (or reuse the checkpoints already there); (checkpoint paths, train seconds)."""
    from tracinwe.io import write_json_atomic
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    done = folder / "bench_fact_tracing.json"
    settings = {"facts": asdict(corpus.settings), "max_length": args.max_length}
    if done.is_file():
        saved = json.loads(done.read_text())
        if saved["settings"] != json.loads(json.dumps(settings)):
            raise SystemExit(f"{folder} was trained on other settings ({saved['settings']}): pass another --run-dir")
        return [folder / p for p in saved["checkpoints"]], saved["train_s"], saved["config"]
    config = DecoderConfig(n_layer=args.layers, n_embd=args.width, n_head=4, n_positions=args.max_length, vocab_size=2000,
                           epochs=args.epochs, batch_size=32, learning_rate=args.lr, num_checkpoints=args.checkpoints,
                           max_length=args.max_length, seed=args.seed, lr_schedule="cosine", warmup_steps=200,
                           min_lr_ratio=0.1, save_second_moment=True)
    t0 = time.perf_counter()
    run = train_decoder(corpus.documents, folder, config, progress=True)
    train_s = time.perf_counter() - t0
    write_json_atomic(done, {"settings": settings, "checkpoints": [p.name for p in run.checkpoints], "train_s": train_s,
                             "config": asdict(config)})
    return run.checkpoints, train_s, asdict(config)


def recalled(lm, queries) -> np.ndarray:
    """Whether the greedy completion of each prompt starts with its answer's tokens (teacher-forced argmax)."""
    ok = []
    with torch.no_grad():
        for lo in range(0, len(queries), 128):
            batch = lm.tokenize([q.example for q in queries[lo : lo + 128]])
            pred = lm.logits(batch)[:, :-1].argmax(-1)
            mask = batch["loss_mask"][:, 1:]
            ok += ((pred == batch["input_ids"][:, 1:]) | ~mask).all(1).tolist()
    return np.array(ok, dtype=bool)


def cut(documents: list[str], tokenizer, max_length: int) -> list[str]:
    """Each document as training saw it: its first ``max_length`` tokens (byte-level BPE decodes back exactly)."""
    out = []
    for d in documents:
        ids = tokenizer(d)["input_ids"]
        out.append(d if len(ids) <= max_length else tokenizer.decode(ids[:max_length]))
    return out


def timed(name: str, timings: dict, fn):
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    out = fn()
    timings[name] = time.perf_counter() - t0
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {timings[name]:.1f} s", file=sys.stderr, flush=True)
    return np.asarray(out, dtype=np.float64)


def fmt(d: dict, key: str) -> str:
    return f"{d[key]:.3f} ± {d[key + '_se']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--docs-per-fact", type=int, default=3)
    parser.add_argument("--filler", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300, help="queried facts (a seeded subset)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=26)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--checkpoints", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--proj-dim", type=int, default=4096)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--tail-queries", type=int, default=100)
    parser.add_argument("--tail-k", type=int, default=5)
    parser.add_argument("--tail-lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="decoder folder to reuse, or to train into (default: a temporary one)")
    parser.add_argument("--out", default="lm_fact_tracing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import tempfile

    from tracinwe import TracInWE
    from tracinwe.data.facts import FactsSettings, synthetic_facts
    from tracinwe.evaluate.baselines.lm_baselines import (
        bm25_scores,
        lm_last_layer_scores,
        lm_projected_gradient_scores,
        load_second_moment,
    )
    from tracinwe.evaluate.baselines.lm_target_rows import lm_target_row_scores
    from tracinwe.evaluate.fact_tracing import evaluate_fact_tracing
    from tracinwe.evaluate.statistics import mean_and_se
    from tracinwe.evaluate.tail_patch import tail_patch
    from tracinwe.io import write_json_atomic
    from tracinwe.models.causal_lm import load_causal_lm

    started = time.perf_counter()
    settings = FactsSettings(num_entities=args.entities, docs_per_fact=args.docs_per_fact, filler=args.filler,
                             query_form="statement", seed=args.seed)
    corpus = synthetic_facts(settings, filler_texts=filler_pool(args.seed) if args.filler else None)
    folder = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench-facts-"))
    checkpoints, train_s, config = trained_run(args, corpus, folder)
    final = load_causal_lm(checkpoints[-1], max_length=args.max_length)
    rates = [json.loads((p / "tracinwe_checkpoint.json").read_text())["learning_rate"] for p in checkpoints]
    recall_all = recalled(final, corpus.queries)
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(corpus.queries), size=min(args.queries, len(corpus.queries)), replace=False))
    queries = [corpus.queries[i] for i in chosen]
    is_recalled = recall_all[chosen]
    print(f"decoder recalls {recall_all.mean():.3f} of {len(corpus.queries)} facts ({is_recalled.mean():.3f} of the "
          f"{len(queries)} queried); trained in {train_s:.0f} s", file=sys.stderr, flush=True)
    train = cut(corpus.documents, final.tokenizer, args.max_length)
    examples = [q.example for q in queries]
    texts = [q.prompt + q.completion for q in queries]
    gold = [q.gold for q in queries]
    verbatim = np.array([any(t in corpus.documents[g] for g in q.gold) for t, q in zip(texts, queries)])

    timings: dict[str, float] = {}
    models = [(load_causal_lm(p, max_length=args.max_length), lr) for p, lr in zip(checkpoints, rates)]
    moments = [load_second_moment(p) for p in checkpoints] if all((p / "optimizer_second_moment.pt").is_file()
                                                                    for p in checkpoints) else None
    scores = {}
    for top_k in (None, 10):
        tw = TracInWE(models, max_length=args.max_length, top_k=top_k, batch_size=64, task="causal-lm")
        scores[tw.name] = timed(tw.name, timings, lambda tw=tw: np.asarray(tw.scores(train, None, examples, None)))
    scores["BM25"] = timed("BM25", timings, lambda: bm25_scores(train, texts))
    scores["BM25 (prompt only)"] = timed("BM25 (prompt only)", timings, lambda: bm25_scores(train, [q.prompt for q in queries]))
    scores["TracIn-last (lm_head)"] = timed("TracIn-last (lm_head)", timings, lambda: lm_last_layer_scores(
        models, train, examples, max_length=args.max_length, batch_size=64))
    name = f"TrackStar-like ({args.proj_dim})"
    scores[name] = timed(name, timings, lambda: lm_projected_gradient_scores(
        models, train, examples, dim=args.proj_dim, seed=args.seed, max_length=args.max_length, batch_size=64,
        second_moments=moments))
    for label, with_input in (("target-rows", False), ("TracIn-WE+out", True)):
        scores[label] = timed(label, timings, lambda with_input=with_input: lm_target_row_scores(
            models, train, examples, max_length=args.max_length, batch_size=64, include_input=with_input))
    scores["random"] = np.random.default_rng(args.seed + 1).random((len(queries), len(train)))
    report = evaluate_fact_tracing(scores, gold, k=args.k, subsets={"recalled": is_recalled, "not recalled": ~is_recalled})

    # tail patch on recalled facts
    tail_ids = np.flatnonzero(is_recalled)[: args.tail_queries]
    if tail_ids.size == 0:
        raise SystemExit("the decoder recalls none of the queried facts: train longer (--epochs) before the tail patch")
    tops = {m: [np.argsort(-s[i], kind="stable")[: args.tail_k].tolist() for i in tail_ids] for m, s in scores.items()}
    t0 = time.perf_counter()
    patched = tail_patch(final, train, [examples[i] for i in tail_ids], tops, learning_rate=args.tail_lr, progress=True)
    timings["tail patch"] = time.perf_counter() - t0
    gold_rows = [list(gold[i]) for i in tail_ids]  # every gold document (docs_per_fact of them) as a reference row
    gold_patch = tail_patch(final, train, [examples[i] for i in tail_ids], {"gold documents (all)": gold_rows},
                            learning_rate=args.tail_lr) if len({len(r) for r in gold_rows}) == 1 else None

    # tables
    lines = [f"\nFact tracing: {len(queries)} of {len(corpus.queries)} facts ({int(is_recalled.sum())} recalled), "
             f"{len(train)} training documents, GPT-2 {config['n_layer']}x{config['n_embd']}, {len(checkpoints)} checkpoints; "
             f"query text verbatim in a gold document for {verbatim.mean():.0%} of queries"]
    lines.append(f"{'method':<26} {'MRR all':>15} {'R@10 all':>15} {'MRR recalled':>15} {'R@10 recalled':>15} {'s':>7}")
    s_all, s_rec = report.summary(), report.summary("recalled")
    key = f"recall@{args.k}"
    for m in scores:
        lines.append(f"{m:<26} {fmt(s_all[m], 'mrr'):>15} {fmt(s_all[m], key):>15} {fmt(s_rec[m], 'mrr'):>15} "
                     f"{fmt(s_rec[m], key):>15} {timings.get(m, 0.0):>7.1f}")
    for subset in ("all", "recalled"):
        for m, r in (("TracIn-WE", "BM25"), ("TracIn-WE-Top10", "BM25"), ("TracIn-WE", "TracIn-last (lm_head)"),
                     ("TracIn-WE", name), ("TracIn-WE+out", "BM25"), ("TracIn-WE+out", "TracIn-WE"),
                     ("TracIn-WE+out", name)):
            d = report.paired(r, subset).get(m)
            if d:
                lines.append(f"  {subset:>8}: {m} - {r}: MRR {d['rr']['mean']:+.3f} ± {d['rr']['se']:.3f} "
                             f"(p={d['rr']['wilcoxon_p']:.2g}), R@{args.k} {d['recall']['mean']:+.3f} ± "
                             f"{d['recall']['se']:.3f} (p={d['recall']['wilcoxon_p']:.2g})")
    lines.append(f"\nTail patch: {len(tail_ids)} recalled facts, one SGD step (lr {args.tail_lr}) on each of the top "
                 f"{args.tail_k} proponents; mean change of log p(completion | prompt)")
    lines.append(f"{'method':<26} {'mean Δ log p':>18} {'share > 0':>10}")
    summary = patched.summary()
    if gold_patch is not None:
        summary.update(gold_patch.summary())
    for m, d in summary.items():
        lines.append(f"{m:<26} {d['mean']:>+10.4f} ± {d['se']:.4f} {d['share_positive']:>10.2f}")
    tail_pairs = {f"{a} - {b}": patched.paired(a, b) for a, b in (("TracIn-WE", "BM25"), ("TracIn-WE", "random"),
                  ("TracIn-WE-Top10", "BM25"), (name, "TracIn-WE"), ("TracIn-last (lm_head)", "TracIn-WE"),
                  ("TracIn-WE+out", "BM25"), ("TracIn-WE+out", "TracIn-WE"), ("TracIn-WE+out", name))}
    for label, d in tail_pairs.items():
        lines.append(f"  {label}: {d['mean']:+.4f} ± {d['se']:.4f} (p={d['wilcoxon_p']:.2g})")
    total_s = time.perf_counter() - started
    lines.append(f"total {total_s:.0f} s (training {train_s:.0f} s)")
    print("\n".join(lines))

    out = RESULTS / f"{args.out}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, {
        "benchmark": "bench_fact_tracing", "argv": sys.argv, "command": " ".join(sys.argv), "args": vars(args),
        "facts_settings": asdict(settings), "decoder_config": config, "checkpoint_learning_rates": rates,
        "n_documents": len(train), "n_facts": len(corpus.queries), "n_queries": len(queries),
        "query_form": "statement prefix '<name> was born in' -> ' <answer>' (the first template of each attribute)",
        "query_verbatim_in_gold_share": float(verbatim.mean()),
        "recall_rate_all_facts": float(recall_all.mean()), "recall_rate_queried": float(is_recalled.mean()),
        "recall_by_attribute": {a: float(recall_all[[q.attribute == a for q in corpus.queries]].mean())
                                for a in settings.attributes},
        "second_moment_normalisation": moments is not None,
        "fact_tracing": report.to_json(["BM25", "TracIn-WE", name]),
        "tail_patch": {"optimizer": "plain SGD, one step, no momentum", "learning_rate": args.tail_lr, "k": args.tail_k,
                       "queries": [int(chosen[i]) for i in tail_ids], "summary": summary, "paired": tail_pairs,
                       "log_p_before": mean_and_se(patched.before),
                       "per_query": {m: v.tolist() for m, v in patched.per_query.items()}},
        "timings_s": {**timings, "train": train_s, "total": total_s},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine()},
        "run_dir": str(folder),
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
