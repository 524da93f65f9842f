"""LDS, the linear datamodeling score (TRAK, dattri, kronfluence, Bergson), on the shared retrain runner.

Draw M random subsets S_j holding a fraction of the training set; retrain on each
(per seed; the subsets are shared by every method and test point); measure the
gold-class log-odds f(x'; S_j). A method predicts g_j(x') = Σ_{i∈S_j} score(i, x').
LDS(x') = Spearman over j of (g_j(x'), f(x'; S_j)); reported as mean ± SE over
test points (each point's LDS averaged over seeds), with paired comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.retrain import Retrain, RetrainRunner
from tracinwe.evaluate.statistics import log_odds, mean_and_se, paired_comparison, spearman

#: Methods every result is compared against, when they were run.
REFERENCES = ("TracIn-last", "TF-IDF", "random")


def random_subsets(n_train: int, m: int, fraction: float = 0.5, seed: int = 0) -> np.ndarray:
    """(m, n_train) boolean masks, each keeping ``round(fraction * n_train)`` rows, seeded."""
    if m < 2 or not 0 < fraction < 1:
        raise TracInWEError(f"LDS needs at least 2 subsets and a fraction in (0, 1), got m={m}, fraction={fraction}")
    rng = np.random.default_rng([seed, 2024])
    size = int(round(fraction * n_train))
    masks = np.zeros((m, n_train), dtype=bool)
    for j in range(m):
        masks[j, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def lds_per_point(scores: np.ndarray, subsets: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Spearman, per test point, between predicted sums ``subsets @ scores.T`` and ``measured`` (m, n_points)."""
    predicted = subsets.astype(np.float64) @ np.asarray(scores, dtype=np.float64).T
    return np.array([spearman(predicted[:, t], measured[:, t]) for t in range(predicted.shape[1])])


def subset_retrains(subsets: np.ndarray, seed: int) -> list[Retrain]:
    return [Retrain.make(seed, np.flatnonzero(~mask)) for mask in subsets]


#: A model must beat always predicting the largest class by this much (held-out accuracy) to be ranked on.
LEARNED_MARGIN = 0.02

@dataclass
class LDSResult:
    """``lds[method]``: (n_seeds, n_points) Spearman correlations; ``measured``: per seed (m, n_points) log-odds."""

    methods: list[str]
    seeds: list[int]
    point_rows: list[int]
    labels: list[int]
    lds: dict[str, np.ndarray]
    measured: dict[int, np.ndarray]
    n_subsets: int
    fraction: float
    settings: dict = field(default_factory=dict)

    def per_point(self, method: str) -> np.ndarray:
        """Each point's LDS, averaged over seeds."""
        return self.lds[method].mean(axis=0)

    def summary(self) -> list[dict]:
        """Methods ranked by mean LDS, with SE, per-seed means and paired comparisons to the references."""
        rows = []
        for name in self.methods:
            mean, se = mean_and_se(self.per_point(name))
            row = {"method": name, "lds": mean, "lds_se": se, "lds_by_seed": self.lds[name].mean(axis=1).tolist()}
            row["paired"] = {ref: paired_comparison(self.per_point(name), self.per_point(ref)).to_json()
                             for ref in REFERENCES if ref in self.lds and ref != name}
            rows.append(row)
        return sorted(rows, key=lambda r: -r["lds"])

    def recommendation(self) -> str:
        """One line: the method to trust on this model, that none beats the next one clearly, or that these
        retrains cannot rank methods at all (over the noise gate, or a model no better than the majority class)."""
        gate = self.settings.get("noise_gate")
        if gate is not None and not gate["passed"]:
            return (f"no recommendation: retraining alone moves p(gold) by {gate['median_abs_delta']:.3f} (median, over the "
                    f"{gate['threshold']} gate), so these retrains cannot rank methods; use a stabler --model "
                    "(e.g. minilm-l2), more training examples, or a smaller --learning-rate")
        accuracy, majority = self.settings.get("heldout_accuracy"), self.settings.get("majority_class_rate")
        if accuracy is not None and majority is not None and accuracy < majority + LEARNED_MARGIN:
            return (f"no recommendation: held-out accuracy {accuracy:.3f} is no better than always predicting the "
                    f"largest class ({majority:.3f}), so LDS here measures the class prior, not which examples "
                    "matter; train the model longer or on more data")
        rows = self.summary()
        best, runner_up = rows[0], rows[1] if len(rows) > 1 else None
        if runner_up is None:
            return f"{best['method']}: LDS {best['lds']:+.3f} ± {best['lds_se']:.3f} (no other method to compare)"
        diff = paired_comparison(self.per_point(best["method"]), self.per_point(runner_up["method"]))
        clear = diff.ci_low > 0
        verdict = "trust it" if clear else "not clearly better than the runner-up: trust either"
        return (f"best: {best['method']} (LDS {best['lds']:+.3f} ± {best['lds_se']:.3f}); "
                f"vs {runner_up['method']} {diff.text()}: {verdict}")

    def to_json(self) -> dict:
        return {
            "metric": "LDS: Spearman over subsets of sum-of-scores vs gold log-odds of the model retrained on the subset",
            "summary": self.summary(), "recommendation": self.recommendation(),
            "seeds": self.seeds, "n_subsets": self.n_subsets, "fraction": self.fraction,
            "point_rows": self.point_rows, "labels": self.labels,
            "per_seed_per_point": {name: values.tolist() for name, values in self.lds.items()},
            "settings": self.settings,
        }

    def markdown(self) -> str:
        lines = ["| method | LDS (mean ± SE over points) | per seed | minus TracIn-last (paired, Wilcoxon p) |",
                 "|---|---|---|---|"]
        for row in self.summary():
            ref = row["paired"].get("TracIn-last")
            paired = f"{ref['mean']:+.3f} ± {ref['se']:.3f} (p={ref['wilcoxon_p']:.2g})" if ref else ""
            seeds = ", ".join(f"{v:+.3f}" for v in row["lds_by_seed"])
            lines.append(f"| {row['method']} | {row['lds']:+.3f} ± {row['lds_se']:.3f} | {seeds} | {paired} |")
        return "\n".join(lines)

    def rich_table(self, title: str = "LDS"):
        from rich.table import Table

        table = Table(title=f"{title}: {len(self.point_rows)} test points, {self.n_subsets} subsets of "
                            f"{self.fraction:.0%}, seeds {self.seeds}")
        for col in ("method", "LDS ± SE", "95% CI", "vs TracIn-last (paired)", "vs random (paired)"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for row in self.summary():
            mean, se = row["lds"], row["lds_se"]
            cells = [row["method"], f"{mean:+.3f} ± {se:.3f}", f"[{mean - 1.96 * se:+.3f}, {mean + 1.96 * se:+.3f}]"]
            for ref in ("TracIn-last", "random"):
                p = row["paired"].get(ref)
                cells.append(f"{p['mean']:+.3f} ± {p['se']:.3f} (p={p['wilcoxon_p']:.2g})" if p else "")
            table.add_row(*cells)
        return table


def run_lds(
    runner: RetrainRunner, scores: Mapping[int, Mapping[str, np.ndarray]], point_rows: Sequence[int],
    labels: Sequence[int], n_subsets: int = 64, fraction: float = 0.5, subset_seed: int = 0,
    progress: bool = True, time_limit_s: float | None = None, settings: dict | None = None,
) -> LDSResult:
    """Retrain on the shared subsets under every seed, then score each method against the measurements.

    ``scores[seed][method]`` is (n_points, n_train), computed on *that seed's* full run.
    """
    seeds = list(scores)
    methods = list(next(iter(scores.values())))
    shapes = {np.shape(m) for per in scores.values() for m in per.values()}
    if shapes != {(len(point_rows), runner.n_train)}:
        raise TracInWEError(f"scores must be (n_points={len(point_rows)}, n_train={runner.n_train}), got {sorted(shapes)}")
    subsets = random_subsets(runner.n_train, n_subsets, fraction, subset_seed)
    jobs = [r for s in seeds for r in subset_retrains(subsets, s)]
    done = runner.run(jobs, progress, time_limit_s, desc="LDS retrains")
    if len(done) < len(set(jobs)):
        missing = len(set(jobs)) - len(done)
        raise TracInWEError(f"{missing} LDS retrains missing (time limit): rerun with the same --out to resume")
    rows, gold = np.asarray(point_rows), [int(y) for y in labels]
    measured = {s: np.stack([log_odds(done[r][rows], gold) for r in subset_retrains(subsets, s)]) for s in seeds}
    lds = {name: np.stack([lds_per_point(scores[s][name], subsets, measured[s]) for s in seeds]) for name in methods}
    return LDSResult(methods, seeds, [int(i) for i in point_rows], gold, lds, measured, n_subsets, fraction, dict(settings or {}))
