"""The retraining-noise gate: how far does a point move when k *random* examples are deleted?

If the same seed, retrained without a few random examples, already moves the
gold probability of a test point by more than the threshold (median over
points), the recipe is chaotic and no deletion-based comparison of methods
means anything. Every deletion, LDS and fix experiment measures this first and
reports it beside its table; over the threshold it says so loudly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tracinwe.evaluate.retrain import Retrain, RetrainRunner

#: The default gate: median |Δp_gold| of random deletions of the largest k, same seed.
NOISE_THRESHOLD = 0.02


def random_deletion_set(n_train: int, k: int, seed: int, control_seed: int = 12345) -> tuple[int, ...]:
    """k random training rows for (k, seed); repeat r of the noise gate uses ``control_seed + r``."""
    rng = np.random.default_rng([control_seed, k, seed])
    return tuple(int(i) for i in np.sort(rng.choice(n_train, size=k, replace=False)))


def noise_retrains(n_train: int, k: int, seeds: Sequence[int], repeats: int) -> list[Retrain]:
    """The gate's retrains: ``repeats`` random deletions of ``k`` rows per seed (repeat 0 = the deletion control)."""
    return [Retrain.make(s, random_deletion_set(n_train, k, s, 12345 + r)) for s in seeds for r in range(repeats)]


@dataclass
class NoiseReport:
    """Median (and 90th percentile) |Δp_gold| of random deletions, against the gate's threshold."""

    k: int
    repeats: int
    seeds: list[int]
    median_abs_delta: float
    p90_abs_delta: float
    mean_abs_delta: float
    threshold: float
    n_values: int

    @property
    def passed(self) -> bool:
        return self.median_abs_delta <= self.threshold

    def message(self) -> str:
        verdict = "ok" if self.passed else "OVER THE GATE: the recipe is chaotic, method differences below mean little"
        return (f"retraining noise: median |Δp_gold| {self.median_abs_delta:.4f} after deleting {self.k} random examples "
                f"(same seed, {self.repeats} draws x {len(self.seeds)} seeds; gate {self.threshold}): {verdict}")

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_json(cls, payload: dict) -> "NoiseReport":
        return cls(**{k: v for k, v in payload.items() if k != "passed"})


def measure_noise(
    runner: RetrainRunner, point_rows: Sequence[int], labels: Sequence[int], k: int, seeds: Sequence[int],
    repeats: int = 3, threshold: float = NOISE_THRESHOLD, full: Mapping[int, np.ndarray] | None = None,
    progress: bool = True,
) -> NoiseReport:
    """Run (or read) the gate's retrains and the full runs; ``point_rows`` index the runner's eval rows."""
    fulls = {s: Retrain.make(s) for s in seeds}
    done = runner.run(list(fulls.values()) + noise_retrains(runner.n_train, k, seeds, repeats), progress, desc="noise gate")
    rows, gold = np.asarray(point_rows), np.asarray(labels)
    deltas = []
    for s in seeds:
        base = (full[s] if full is not None else done[fulls[s]])[rows, gold]
        for r in noise_retrains(runner.n_train, k, [s], repeats):
            deltas.append(np.abs(done[r][rows, gold] - base))
    values = np.concatenate(deltas)
    return NoiseReport(int(k), int(repeats), [int(s) for s in seeds], float(np.median(values)), float(np.quantile(values, 0.9)),
                       float(values.mean()), float(threshold), int(values.size))
