"""The paper's fix-rate experiment on a real data set, behind ``tracinwe fix`` and ``benchmarks/bench_fix.py``."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context

import numpy as np

from tracinwe.evaluate.baselines import TracInWEMethod
from tracinwe.evaluate.experiment import ExperimentSetup, build_methods, prepare_experiment
from tracinwe.evaluate.fix import (
    FixOutcome,
    FixProposal,
    evaluate_proposal,
    fixable_mistakes,
    most_negative_shared_tokens,
    summarize,
    top_opponents,
)


@dataclass
class FixSetup:
    """What to fix and how; saved beside the results.

    ``delete_count`` plays the paper's m = 50 (of 50,000 training examples) and ``mask_count`` its
    200 masked opponents, scaled to the training set.
    """

    experiment: ExperimentSetup = field(default_factory=lambda: ExperimentSetup(n_test_points=1, ks=(1,), methods=()))
    delete_count: int = 20
    mask_count: int = 40
    delete_methods: tuple[str, ...] = ("TracIn-WE", "TracIn-WE-Top10", "IF-last", "TracIn-last")
    mask_methods: tuple[str, ...] = ("TracIn-WE", "TracIn-WE-Top10")
    low: float = 0.3
    high: float = 0.7
    max_cases: int = 20
    retrain_seed_offset: int = 1000
    workers: int = 1

    def to_json(self) -> dict:
        out = asdict(self)
        out["experiment"] = self.experiment.to_json()
        return out


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _evaluate(args) -> FixOutcome:
    return evaluate_proposal(*args)


def run_fix_experiment(setup: FixSetup, progress: bool = True, tokenizer=None) -> dict:
    """Find fixable mistakes, propose deletions / maskings per method, retrain, and summarise."""
    from tqdm.auto import tqdm

    names = tuple(dict.fromkeys(setup.delete_methods + setup.mask_methods))
    prepared = prepare_experiment(replace(setup.experiment, methods=names), tokenizer)
    task, seed = prepared.task, prepared.setup.seeds[0]
    heldout = list(range(len(prepared.heldout_texts)))
    probs = task.evaluate(prepared.run.model, heldout)
    accuracy = float((probs.argmax(1) == np.asarray(prepared.heldout_labels)).mean())
    cases = fixable_mistakes(probs, prepared.heldout_labels, setup.low, setup.high)[: setup.max_cases]
    info = {"setup": setup.to_json(), "heldout_accuracy": accuracy, "n_train": len(prepared.train_texts),
            "n_heldout": len(heldout), "cases": cases, "label_names": prepared.label_names}
    if not cases:
        return {**info, "summary": [], "outcomes": []}
    gold = [prepared.heldout_labels[i] for i in cases]
    texts = [prepared.heldout_texts[i] for i in cases]
    methods = {m.name: m for m in build_methods(prepared, names)}
    scores = {name: m.scores(prepared.train_texts, prepared.train_labels, texts, gold)
              for name, m in tqdm(methods.items(), desc="influence scores", disable=not progress)}
    proposals: list[tuple[int, FixProposal]] = []
    for row, case in enumerate(cases):
        proposals.append((row, FixProposal("retrain (other seed)", seed_offset=setup.retrain_seed_offset)))
        for name in setup.delete_methods:
            proposals.append((row, FixProposal(f"delete top-{setup.delete_count} opponents: {name}",
                                               delete=top_opponents(scores[name][row], setup.delete_count))))
        for name in setup.mask_methods:
            method = methods[name]
            assert isinstance(method, TracInWEMethod), "word masking needs a TracIn-WE method"
            rows = top_opponents(scores[name][row], setup.mask_count)
            mask = most_negative_shared_tokens(method.tracin, prepared.train_texts, prepared.train_labels, rows, texts[row], gold[row])
            proposals.append((row, FixProposal(f"mask worst word in top-{setup.mask_count} opponents: {name}", mask=mask)))
    jobs = [(task.train, task.evaluate, p, len(prepared.train_texts), seed, cases[row], gold[row], heldout,
             prepared.heldout_labels, float(probs[cases[row], gold[row]]), accuracy) for row, p in proposals]
    bar = tqdm(total=len(jobs), desc="fix retrains", unit="run", disable=not progress)
    outcomes: list[FixOutcome] = []
    if setup.workers <= 1:
        for job in jobs:
            outcomes.append(_evaluate(job))
            bar.update(1)
    else:
        with ProcessPoolExecutor(setup.workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            for outcome in pool.map(_evaluate, jobs):
                outcomes.append(outcome)
                bar.update(1)
    bar.close()
    return {**info, "summary": summarize(outcomes), "outcomes": [o.to_json() for o in outcomes],
            "proposals": [{"test_index": cases[row], "strategy": p.strategy, "delete": p.delete,
                           "mask": {str(k): v for k, v in p.mask.items()}} for row, p in proposals]}
