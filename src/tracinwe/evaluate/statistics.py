"""Statistics that can tell two influence methods apart: paired differences, Wilcoxon, Spearman.

Test points differ from each other far more than methods differ on one point, so
methods are compared *paired*: per point, then mean, standard error, a 95%
t-interval and a Wilcoxon signed-rank p-value over points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def mean_and_se(values) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of a 1-D array; SE is 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


@dataclass(frozen=True)
class PairedComparison:
    """``a - b`` over the same points: mean, SE, 95% CI (t) and the two-sided Wilcoxon signed-rank p."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float
    n: int

    def to_json(self) -> dict:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        """``+0.012 ± 0.004 (p=0.01)``: mean ± SE with the Wilcoxon p-value."""
        return f"{self.mean:+.{digits}f} ± {self.se:.{digits}f} (p={self.wilcoxon_p:.2g})"


def paired_comparison(a, b) -> PairedComparison:
    """Compare two per-point arrays measured on the same points."""
    from scipy import stats

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, se = mean_and_se(diff)
    half = float(stats.t.ppf(0.975, diff.size - 1) * se) if diff.size > 1 else float("nan")
    nonzero = diff[diff != 0]
    p = float(stats.wilcoxon(nonzero).pvalue) if nonzero.size >= 1 and diff.size > 1 else 1.0
    return PairedComparison(mean, se, mean - half, mean + half, p, int(diff.size))


def spearman(x, y) -> float:
    """Spearman rank correlation; 0 when either side is constant (nothing to rank)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def mcnemar_p(fixed_a, fixed_b) -> float:
    """Exact two-sided McNemar test of two paired success vectors (binomial on the discordant pairs)."""
    from scipy import stats

    a, b = np.asarray(fixed_a, dtype=bool), np.asarray(fixed_b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def log_odds(probabilities, labels) -> np.ndarray:
    """Gold-class log-odds ``log p - log(1 - p)`` of rows of class probabilities, clipped at ±34.5."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    p = np.clip(probabilities[np.arange(len(labels)), np.asarray(labels)], 1e-15, 1 - 1e-15)
    return np.log(p) - np.log1p(-p)
