"""Fixing mistakes: delete a misclassified test example's top opponents, or mask their most negative shared word.

For a test example the model gets wrong (gold-class probability in [0.3, 0.7] by
default, as in the paper), opponents are scored on the *gold* label: removing
them should raise the gold class. A proposal is either the top-``m`` opponents
to delete, or, for each of the top ``mask_count`` opponents, the shared
(non-special) token with the most negative TracIn-WE contribution, to be masked
out of that training example. The model is then retrained with the same seed;
the fix counts if the prediction becomes the gold class, and its cost is the
change in held-out accuracy. Plain retraining with another seed is the
reference (it fixes some borderline mistakes by chance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracinwe.evaluate.retrain import Retrain
from tracinwe.evaluate.statistics import mean_and_se
from tracinwe.scoring.words import token_contributions
from tracinwe.tracin import TracInWE


def fixable_mistakes(probabilities: np.ndarray, labels: Sequence[int], low: float = 0.3, high: float = 0.7) -> list[int]:
    """Rows predicted wrongly whose gold-class probability lies in [low, high]."""
    labels = np.asarray(labels)
    gold = probabilities[np.arange(len(labels)), labels]
    return [int(i) for i in np.flatnonzero((probabilities.argmax(1) != labels) & (gold >= low) & (gold <= high))]


def top_opponents(scores: np.ndarray, m: int) -> list[int]:
    """The ``m`` most negative training indices of one score row (gold-label scores)."""
    order = np.argsort(scores, kind="stable")[:m]
    return [int(i) for i in order if scores[i] < 0]


def most_negative_shared_tokens(
    tracin: TracInWE, train_texts: Sequence[str], train_labels: Sequence[int], rows: Sequence[int],
    test_text: str, gold: int,
) -> dict[int, list[int]]:
    """For each training row, the shared non-special token with the most negative contribution (if any)."""
    if not rows:
        return {}
    specials = tracin.final.special_token_ids
    train = tracin.capture([train_texts[r] for r in rows], [train_labels[r] for r in rows])
    test = tracin.capture([test_text], [gold])
    out = {}
    for i, row in enumerate(rows):
        totals = {t: v for t, v in token_contributions(train, test, tracin.learning_rates, i, 0).items() if t not in specials}
        if totals:
            token, value = min(totals.items(), key=lambda kv: kv[1])
            if value < 0:
                out[int(row)] = [int(token)]
    return out


@dataclass
class FixOutcome:
    """One test example under one strategy."""

    test_index: int
    strategy: str
    gold: int
    gold_probability_before: float
    gold_probability_after: float
    fixed: bool
    accuracy_change: float
    edits: int
    seed: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


def fix_outcome(case: int, strategy: str, retrain: Retrain, before: np.ndarray, after: np.ndarray,
                labels: Sequence[int], seed: int = 0) -> FixOutcome:
    """Judge one retrain on one mistake of the run with seed ``seed``.

    ``before`` / ``after``: held-out probabilities (n, C) of that full run and of the retrain;
    ``case``: the mistake's held-out row; ``labels``: the gold labels of the held-out rows.
    """
    labels = np.asarray(labels)
    gold = int(labels[case])
    change = float((after.argmax(1) == labels).mean()) - float((before.argmax(1) == labels).mean())
    return FixOutcome(case, strategy, gold, float(before[case, gold]), float(after[case, gold]),
                      bool(after[case].argmax() == gold), change, len(retrain.removed) + len(retrain.masked), seed)


def summarize(outcomes: Sequence[FixOutcome]) -> list[dict]:
    """Per strategy: cases, fix rate, mean accuracy change +- SE, mean gold-probability change."""
    out = []
    for strategy in dict.fromkeys(o.strategy for o in outcomes):
        rows = [o for o in outcomes if o.strategy == strategy]
        fixed = np.array([o.fixed for o in rows], dtype=float)
        acc = np.array([o.accuracy_change for o in rows])
        dp = np.array([o.gold_probability_after - o.gold_probability_before for o in rows])
        rate, rate_se = mean_and_se(fixed)
        acc_mean, acc_se = mean_and_se(acc)
        out.append({"strategy": strategy, "cases": len(rows), "fix_rate": rate, "fix_rate_se": rate_se,
                    "accuracy_change": acc_mean, "accuracy_change_se": acc_se, "gold_probability_change": float(dp.mean()),
                    "mean_edits": float(np.mean([o.edits for o in rows]))})
    return out


def fix_markdown(summary: Sequence[dict]) -> str:
    """The fix-rate table as Markdown (``summarize`` rows with their McNemar p values)."""
    lines = ["| strategy | cases | fixed ± SE | McNemar p vs random | McNemar p vs other seed "
             "| held-out accuracy change | p(gold) change |",
             "|---|---|---|---|---|---|---|"]
    for row in summary:
        p1, p2 = row.get("mcnemar_p_vs_random"), row.get("mcnemar_p_vs_other_seed")
        lines.append(f"| {row['strategy']} | {row['cases']} | {row['fix_rate']:.0%} ± {row['fix_rate_se']:.0%} | "
                     f"{'' if p1 is None else f'{p1:.2g}'} | {'' if p2 is None else f'{p2:.2g}'} | "
                     f"{row['accuracy_change']:+.4f} ± {row['accuracy_change_se']:.4f} "
                     f"| {row['gold_probability_change']:+.3f} |")
    return "\n".join(lines)


def fix_table(summary: Sequence[dict], title: str):
    """The fix-rate table for the terminal."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("strategy", "cases", "fixed", "McNemar p vs random", "held-out accuracy change", "gold prob. change", "edits"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for row in summary:
        p = row.get("mcnemar_p_vs_random")
        table.add_row(row["strategy"], str(row["cases"]), f"{row['fix_rate']:.0%} ± {row['fix_rate_se']:.0%}",
                      "" if p is None else f"{p:.2g}", f"{row['accuracy_change']:+.4f} ± {row['accuracy_change_se']:.4f}",
                      f"{row['gold_probability_change']:+.3f}", f"{row['mean_edits']:.0f}")
    return table
