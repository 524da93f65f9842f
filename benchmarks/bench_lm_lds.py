"""LDS on a decoder-only LM: which attribution method predicts what retraining a GPT-2 on half its documents does.

Data: `tracinwe.data.facts.synthetic_facts` (invented people x birthplace / profession, each fact stated in
``--docs-per-fact`` documents with different templates; queries in the "statement" form) mixed with
``--filler`` real Rotten Tomatoes snippets (<= 120 characters). Test points: every fact query
(``"<name> was born in"`` / ``" Lisbon"``). Model: a GPT-2 (2 layers, ``--width``) trained from scratch with
`train_decoder` on a byte-level BPE learned once on the training documents; every retrain uses that same
tokenizer, the seed of the run it is paired with and that run's document order restricted to its subset.

Measured output per test point: the summed NLL (nats) of the completion given the prompt. LDS(x') =
Spearman over the M subsets of Σ_{i∈S_j} score_i and **minus** that loss (score > 0 = proponent = lowers
the loss), per seed on that seed's own explained run; mean ± SE over points (each point averaged over seeds),
paired TracIn-WE − method and TracIn-WE+out − method differences with SE and Wilcoxon p (``TracIn-WE+out`` /
``target-rows``: TracIn-WE's sparse output-side extension, `evaluate.baselines.lm_target_rows`).
Reference rows (not methods: they read the corpus's ground truth) score 1 on the documents that state the queried
fact, that contain the answer word (for any entity), or that name the entity: how much
of the retrains' variation each kind of document alone explains. Retraining
noise is measured first (same seed without k random documents; the other seed's full run) and reported relative
to the spread the subsets cause.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false nice -n 19 python benchmarks/bench_lm_lds.py
    python benchmarks/bench_lm_lds.py --entities 12 --filler 12 --subsets 8 --seeds 0 --out lm_lds-quick  # smoke

Prints a table and writes ``benchmarks/results/lm_lds.json``. Retrains are cached in ``--cache-dir`` (rerun resumes).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
MAX_LENGTH = 64


def reference_rows(facts) -> dict[str, np.ndarray]:
    """Reference rows, not attribution methods (they read the corpus's ground truth): 1 on the documents that state
    the queried fact / that contain the answer word (for any entity) / that name the entity, 0 elsewhere."""
    import re

    rows = {name: np.zeros((len(facts.queries), len(facts.documents))) for name in REFERENCE_ROWS}
    for t, q in enumerate(facts.queries):
        rows[REFERENCE_ROWS[0]][t, list(q.gold)] = 1.0
        for i, doc in enumerate(facts.documents):
            rows[REFERENCE_ROWS[1]][t, i] = float(re.search(rf"\b{re.escape(q.answer)}\b", doc) is not None)
            rows[REFERENCE_ROWS[2]][t, i] = float(q.entity in doc)
    return rows


REFERENCE_ROWS = ("ref: gold documents", "ref: documents with the answer word", "ref: documents naming the entity")


def corpus(args):
    from tracinwe.data import load_dataset_source
    from tracinwe.data.facts import FactsSettings, synthetic_facts

    pool = [t for t in load_dataset_source("bundled:rotten-tomatoes").dedupe().texts if 20 <= len(t) <= 120]
    settings = FactsSettings(num_entities=args.entities, attributes=("birthplace", "profession"),
                             docs_per_fact=args.docs_per_fact, filler=args.filler, query_form="statement", seed=0)
    return synthetic_facts(settings, filler_texts=pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=40)
    parser.add_argument("--docs-per-fact", type=int, default=2)
    parser.add_argument("--filler", type=int, default=80)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=float, default=20.0)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--subsets", type=int, default=32)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--noise-fraction", type=float, default=0.05, help="k = this share of the documents")
    parser.add_argument("--noise-repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default="TracIn-WE,TracIn-WE-Top10,TracIn-WE+out,target-rows,BM25,TracIn-last,"
                                              "TrackStar-like,random")
    parser.add_argument("--no-reference", action="store_true", help="leave out the reference rows (ref: ...)")
    parser.add_argument("--cache-dir", default="/tmp/bench-lm-lds")
    parser.add_argument("--out", default="lm_lds")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from rich.console import Console

    from tracinwe.evaluate.lm_lds import (
        LMRetrainTask,
        completion_losses,
        lm_method_scores,
        lm_noise_retrains,
        lm_runner,
        measure_lm_noise,
        run_lm_lds,
    )
    from tracinwe.io import write_json_atomic
    from tracinwe.models.causal_lm import load_causal_lm
    from tracinwe.training.causal_lm import DecoderConfig, train_bpe_tokenizer, train_decoder

    console = Console()
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    facts = corpus(args)
    docs, points = facts.documents, [q.example for q in facts.queries]
    config = DecoderConfig(n_layer=2, n_embd=args.width, n_head=2, n_positions=MAX_LENGTH, vocab_size=1000, epochs=args.epochs,
                           batch_size=16, learning_rate=args.lr, num_checkpoints=3, max_length=MAX_LENGTH)
    tokenizer = train_bpe_tokenizer(docs, vocab_size=config.vocab_size)
    longest = max(len(tokenizer(d)["input_ids"]) for d in docs)
    if longest > MAX_LENGTH:
        raise SystemExit(f"a document has {longest} tokens > {MAX_LENGTH}: the facade refuses to truncate")
    console.print(f"{len(docs)} documents ({sum(s == 'filler' for s in facts.sources)} filler), {len(points)} test points, "
                  f"seeds {seeds}, {args.subsets} subsets; load average {os.getloadavg()[0]:.1f}")
    cache = Path(args.cache_dir)
    task = LMRetrainTask(docs, points, config, tokenizer)
    runner = lm_runner(task, cache, workers=args.workers)

    # 1. The explained runs (checkpoints saved), one per seed.
    runs, timings = {}, {"explained_run_s": {}, "scores_s": {}}
    for s in seeds:
        t0 = time.perf_counter()
        runs[s] = train_decoder(docs, cache / f"explained-seed{s}", replace(config, seed=s),
                                tokenizer=tokenizer)
        timings["explained_run_s"][s] = time.perf_counter() - t0
    final_loss = {s: completion_losses(runs[s].model, tokenizer, points, MAX_LENGTH) for s in seeds}

    # 2. Noise first: each seed's full retrain (must equal its explained run) and same-seed random deletions.
    k = max(1, int(round(args.noise_fraction * len(docs))))
    t0 = time.perf_counter()
    done = runner.run(lm_noise_retrains(len(docs), seeds, k, args.noise_repeats), desc="noise retrains")
    timings["noise_retrains_s"] = time.perf_counter() - t0
    from tracinwe.evaluate.retrain import Retrain

    pairing = {s: float(np.abs(done[Retrain.make(s)][:, 0] - final_loss[s]).max()) for s in seeds}
    console.print(f"full retrain vs explained run, max |Δ loss|: {pairing} (paired: same seed, order, tokenizer)")
    same_seed = [np.abs(done[r][:, 0] - done[Retrain.make(r.seed)][:, 0]) for r in done if not r.is_full]
    console.print(f"retraining noise (before any method): same seed without {k} random documents moves the completion loss "
                  f"by {np.median(np.concatenate(same_seed)):.3f} nats (median over points x draws); "
                  f"mean completion loss of the explained runs {[round(float(v.mean()), 3) for v in final_loss.values()]}")

    # 3. Scores, per seed on that seed's own checkpoints.
    scores = {}
    for s in seeds:
        checkpoints = [(load_causal_lm(path, max_length=MAX_LENGTH), lr)
                       for path, lr in zip(runs[s].checkpoints, runs[s].learning_rates)]
        scores[s], timings["scores_s"][s] = {}, {}
        for m in methods:
            t0 = time.perf_counter()
            scores[s].update(lm_method_scores([m], checkpoints, tokenizer, docs, points, MAX_LENGTH, seed=s))
            timings["scores_s"][s][m] = time.perf_counter() - t0
        if not args.no_reference:
            scores[s].update(reference_rows(facts))

    # 4. The subsets, then the noise report relative to their spread.
    t0 = time.perf_counter()
    result = run_lm_lds(runner, scores, n_subsets=args.subsets)
    timings["subset_retrains_s"] = time.perf_counter() - t0
    noise = measure_lm_noise(runner, seeds, k, args.noise_repeats, result.losses, progress=False)
    timings["total_s"] = time.perf_counter() - started
    console.print(noise.message())
    console.print(result.markdown())
    spread = {s: result.losses[s].std(axis=0, ddof=1).tolist() for s in seeds}
    payload = {
        "benchmark": "bench_lm_lds", "command": " ".join(sys.argv), "config": vars(args), "decoder": asdict(config),
        "n_train": len(docs), "n_filler": sum(s == "filler" for s in facts.sources), "n_points": len(points),
        "measured_output": "summed NLL (nats) of the completion given the prompt; LDS correlates with minus it",
        "mean_completion_loss_full_run": {s: float(v.mean()) for s, v in final_loss.items()},
        "mean_completion_loss_subsets": {s: float(v.mean()) for s, v in result.losses.items()},
        "full_retrain_vs_explained_max_abs_diff": pairing, "noise": noise.to_json(), "subset_spread_per_point": spread,
        "lds": result.to_json(), "timings": timings, "retrains_run_now": runner.trained,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "workers": args.workers, "load_average": os.getloadavg(), "cpu": platform.processor() or platform.machine()},
    }
    out = RESULTS / f"{args.out}.json"
    write_json_atomic(out, payload)
    console.print(f"timings: {timings}\nwrote {out}")


if __name__ == "__main__":
    main()
