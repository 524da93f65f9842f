"""The paper's fix-rate experiment on a real data set, per seed, behind ``tracinwe fix`` and ``benchmarks/bench_fix.py``.

For every seed: the full run's mistakes whose gold probability lies in [low, high]
are the cases; every method scores the training set against them with *that
seed's* checkpoints; each strategy edits the same number of training rows
(delete the top opponents, or mask the most negative shared word of as many top
opponents) and the model is retrained with the same seed. Two controls share
the budget: the same seed without the same number of *random* rows, and plain
retraining with another seed. Fix rates are compared with McNemar's test.
Retrains go through the shared `RetrainRunner` (cached, resumable).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines import TracInWEMethod
from tracinwe.evaluate.experiment import ExperimentSetup, method_context, prepare_experiment
from tracinwe.evaluate.fix import (
    FixOutcome,
    fix_markdown,
    fix_outcome,
    fix_table,
    fixable_mistakes,
    most_negative_shared_tokens,
    summarize,
    top_opponents,
)
from tracinwe.evaluate.registry import build_method
from tracinwe.evaluate.retrain import Retrain, RetrainRunner
from tracinwe.evaluate.statistics import mcnemar_p

RANDOM_CONTROL = "delete random rows (same seed)"
OTHER_SEED = "retrain (other seed)"


@dataclass
class FixSetup:
    """What to fix and how; saved beside the results.

    ``delete_count`` plays the paper's m = 50 (of 50,000 training examples) and ``mask_count`` its
    200 masked opponents, scaled to the training set; equal by default, so every strategy edits as
    many training rows as the random control deletes.
    """

    experiment: ExperimentSetup = field(default_factory=lambda: ExperimentSetup(n_test_points=1, ks=(1,), methods=(),
                                                                                seeds=(0, 1, 2)))
    delete_count: int = 20
    mask_count: int = 20
    delete_methods: tuple[str, ...] = ("TracIn-WE", "TracIn-WE-Top10", "IF-last", "TracIn-last")
    mask_methods: tuple[str, ...] = ("TracIn-WE",)
    low: float = 0.3
    high: float = 0.7
    max_cases: int = 20  # per seed
    retrain_seed_offset: int = 1000
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high <= 1:
            raise TracInWEError(f"the window [{self.low}, {self.high}] must satisfy 0 <= low <= high <= 1")
        if self.delete_count < 1 or self.mask_count < 1 or self.max_cases < 1:
            raise TracInWEError("delete_count, mask_count and max_cases must be at least 1")

    def to_json(self) -> dict:
        out = asdict(self)
        out["experiment"] = self.experiment.to_json()
        return out


def _strategies(setup: FixSetup) -> list[str]:
    return ([OTHER_SEED, RANDOM_CONTROL] + [f"delete top-{setup.delete_count} opponents: {m}" for m in setup.delete_methods]
            + [f"mask worst word in top-{setup.mask_count} opponents: {m}" for m in setup.mask_methods])


@dataclass
class FixResult:
    """Per strategy, how many mistakes a retrain fixed (with McNemar p values), every outcome and every proposal."""

    setup: FixSetup
    per_seed: dict  # seed -> {"heldout_accuracy", "cases"}
    n_train: int
    n_heldout: int
    label_names: list[str]
    summary: list[dict]  # `summarize` rows with McNemar p against the random control and the other seed
    outcomes: list[FixOutcome]
    proposals: list[dict]  # what each (seed, case, strategy) deleted or masked

    @property
    def cases(self) -> list[int]:
        return [c for s in self.per_seed.values() for c in s["cases"]]

    @property
    def heldout_accuracy(self) -> float:
        return float(np.mean([s["heldout_accuracy"] for s in self.per_seed.values()]))

    def to_json(self) -> dict:
        return {"setup": self.setup.to_json(), "per_seed": self.per_seed, "n_train": self.n_train,
                "n_heldout": self.n_heldout, "heldout_accuracy": self.heldout_accuracy, "cases": self.cases,
                "label_names": self.label_names, "summary": self.summary,
                "outcomes": [o.to_json() for o in self.outcomes], "proposals": self.proposals}

    def markdown(self) -> str:
        return fix_markdown(self.summary)

    def rich_table(self, title: str = "fixing mistakes"):
        return fix_table(self.summary, f"{title}: {len(self.cases)} mistakes, held-out accuracy {self.heldout_accuracy:.3f}")


def run_fix_experiment(setup: FixSetup, progress: bool = True, tokenizer=None, cache_dir: str | Path | None = None) -> FixResult:
    """Per seed: find fixable mistakes, propose edits per strategy, retrain (cached), judge, and compare."""
    import tempfile

    prepared = prepare_experiment(replace(setup.experiment, methods=()), tokenizer)
    heldout, labels = list(range(len(prepared.heldout_texts))), np.asarray(prepared.heldout_labels)
    with tempfile.TemporaryDirectory() as scratch:
        runner = RetrainRunner(prepared.task.train, prepared.task.evaluate, len(prepared.train_texts), heldout,
                               cache_dir or scratch, {**prepared.retrain_recipe(), "eval_rows": "all held-out"}, setup.workers)
        outcomes, proposals, per_seed = [], [], {}
        for seed in prepared.setup.seeds:
            full = runner.run([Retrain.make(seed)], progress=False)[Retrain.make(seed)]
            cases = fixable_mistakes(full, labels, setup.low, setup.high)[: setup.max_cases]
            per_seed[str(seed)] = {"heldout_accuracy": float((full.argmax(1) == labels).mean()), "cases": cases}
            if not cases:
                continue
            planned = _plan(setup, prepared, seed, cases, progress)
            done = runner.run([r for _, _, r in planned], progress, desc=f"fix retrains (seed {seed})")
            for case, strategy, retrain in planned:
                outcomes.append(fix_outcome(case, strategy, retrain, full, done[retrain], labels, seed))
                proposals.append({"seed": seed, "test_index": case, "strategy": strategy, "delete": list(retrain.removed),
                                  "mask": {str(r): list(t) for r, t in retrain.masked}})
    return FixResult(setup, per_seed, len(prepared.train_texts), len(heldout), list(prepared.label_names),
                     with_mcnemar(summarize(outcomes), outcomes), outcomes, proposals)


def _plan(setup: FixSetup, prepared, seed: int, cases: list[int], progress: bool) -> list[tuple[int, str, Retrain]]:
    """(case, strategy, retrain) for every case and strategy, from ``seed``'s own checkpoints."""
    ctx = method_context(prepared, seed)
    texts, gold = [prepared.heldout_texts[i] for i in cases], [prepared.heldout_labels[i] for i in cases]
    names = tuple(dict.fromkeys(setup.delete_methods + setup.mask_methods))
    methods = {name: build_method(name, ctx) for name in names}
    scores = {name: m.scores(prepared.train_texts, prepared.train_labels, texts, gold) for name, m in methods.items()}
    n_train = len(prepared.train_texts)
    planned = []
    for row, case in enumerate(cases):
        rng = np.random.default_rng([seed, case, 99])
        planned.append((case, OTHER_SEED, Retrain.make(seed + setup.retrain_seed_offset)))
        planned.append((case, RANDOM_CONTROL, Retrain.make(seed, rng.choice(n_train, setup.delete_count, replace=False))))
        for name in setup.delete_methods:
            planned.append((case, f"delete top-{setup.delete_count} opponents: {name}",
                            Retrain.make(seed, top_opponents(scores[name][row], setup.delete_count))))
        for name in setup.mask_methods:
            method = methods[name]
            if not isinstance(method, TracInWEMethod):
                raise TracInWEError(f"word masking needs a TracIn-WE method, not {name!r}: use TracIn-WE or TracIn-WE-Top<k>")
            rows = top_opponents(scores[name][row], setup.mask_count)
            mask = most_negative_shared_tokens(method.tracin, prepared.train_texts, prepared.train_labels, rows,
                                               texts[row], gold[row])
            planned.append((case, f"mask worst word in top-{setup.mask_count} opponents: {name}",
                            Retrain.make(seed, masked=mask)))
    return planned


def with_mcnemar(summary: list[dict], outcomes: list[FixOutcome]) -> list[dict]:
    """Each strategy's McNemar p against the random control and against plain retraining, paired by (seed, case)."""
    fixed = {(o.strategy, o.seed, o.test_index): o.fixed for o in outcomes}
    keys = sorted({(o.seed, o.test_index) for o in outcomes})
    for row in summary:
        for ref, field_name in ((RANDOM_CONTROL, "mcnemar_p_vs_random"), (OTHER_SEED, "mcnemar_p_vs_other_seed")):
            pairs = [(fixed[(row["strategy"], *k)], fixed[(ref, *k)]) for k in keys
                     if (row["strategy"], *k) in fixed and (ref, *k) in fixed]
            row[field_name] = mcnemar_p([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None
    return summary
