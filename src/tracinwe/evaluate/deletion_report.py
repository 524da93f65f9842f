"""Case-deletion results: DEL curves per method, AUC-DEL with standard errors, tables and JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

SIGNS = ("del+", "del-")
CONTROL = "random-control"


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of a 1-D array; SE is 0 for a single value."""
    values = np.asarray(values, dtype=np.float64)
    se = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


@dataclass
class DeletionResult:
    """``delta[method][sign]``: (n_points, n_ks) change of the gold-class probability, mean over seeds.

    The random control (if run) is ``delta["random-control"]["del+"]`` (= ``["del-"]``: one random
    deletion set per (k, seed), evaluated on every test point).
    """

    methods: list[str]
    ks: list[int]
    seeds: list[int]
    test_indices: list[int]
    test_labels: list[int]
    delta: dict[str, dict[str, np.ndarray]]
    full_probability: np.ndarray  # (n_seeds, n_points) p_gold of the full-data runs
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_probabilities(
        cls, probabilities: Mapping[str, list[list[float]]], methods: Sequence[str], ks: Sequence[int],
        seeds: Sequence[int], test_labels: Sequence[int], test_indices: Sequence[int], random_control: bool,
        settings: dict | None = None, points: Sequence[int] | None = None,
    ) -> "DeletionResult":
        """Assemble from the cached retrain probabilities keyed as in `plan_jobs` (only ``points`` if given)."""
        points = list(range(len(test_labels))) if points is None else list(points)
        n = len(points)
        gold = np.asarray(test_labels)[points]
        full = np.stack([np.asarray(probabilities[f"full__s{s}"])[points, gold] for s in seeds])
        delta: dict[str, dict[str, np.ndarray]] = {}
        for name in methods:
            delta[name] = {}
            for sign in SIGNS:
                d = np.zeros((n, len(ks)))
                for row, t in enumerate(points):
                    for j, k in enumerate(ks):
                        p = [probabilities[f"{name}__t{t}__{sign}__k{k}__s{s}"][0][gold[row]] for s in seeds]
                        d[row, j] = np.mean(np.asarray(p) - full[:, row])
                delta[name][sign] = d
        if random_control:
            d = np.zeros((n, len(ks)))
            for j, k in enumerate(ks):
                per_seed = [np.asarray(probabilities[f"{CONTROL}__k{k}__s{s}"])[points, gold] - full[i]
                            for i, s in enumerate(seeds)]
                d[:, j] = np.mean(per_seed, axis=0)
            delta[CONTROL] = {"del+": d, "del-": d}
        return cls(list(methods), list(ks), list(seeds), [list(test_indices)[t] for t in points], gold.tolist(), delta, full,
                   settings or {})

    def auc(self, method: str, sign: str) -> tuple[float, float]:
        """AUC-DEL (mean over the k grid, then over test points) and its standard error over test points."""
        return mean_and_se(self.delta[method][sign].mean(axis=1))

    def paired_difference(self, method: str, reference: str, sign: str) -> tuple[float, float]:
        """AUC-DEL of ``method`` minus ``reference`` on the same test points: mean and SE of the per-point differences.

        Test points differ far more from each other (a confident prediction barely moves) than the
        methods do on one point, so the paired SE is the one to compare two methods with.
        """
        return mean_and_se(self.delta[method][sign].mean(axis=1) - self.delta[reference][sign].mean(axis=1))

    def curve(self, method: str, sign: str) -> list[float]:
        """DEL at each k, averaged over test points."""
        return self.delta[method][sign].mean(axis=0).tolist()

    @property
    def rows(self) -> list[str]:
        """Methods in table order, the random control last."""
        return self.methods + ([CONTROL] if CONTROL in self.delta else [])

    def summary(self, reference: str = "TracIn-last") -> list[dict]:
        """One dict per method: AUC-DEL+/- with standard errors, the DEL curves, and the paired
        difference to ``reference`` (when it was run)."""
        out = []
        for name in self.rows:
            (plus, plus_se), (minus, minus_se) = self.auc(name, "del+"), self.auc(name, "del-")
            row = {"method": name, "auc_del_plus": plus, "auc_del_plus_se": plus_se,
                   "auc_del_minus": minus, "auc_del_minus_se": minus_se,
                   "del_plus_by_k": self.curve(name, "del+"), "del_minus_by_k": self.curve(name, "del-")}
            if reference in self.delta:
                (dp, dp_se), (dm, dm_se) = (self.paired_difference(name, reference, s) for s in SIGNS)
                row.update({"paired_reference": reference, "paired_del_plus": dp, "paired_del_plus_se": dp_se,
                            "paired_del_minus": dm, "paired_del_minus_se": dm_se})
            out.append(row)
        return out

    def to_json(self) -> dict:
        return {
            "summary": self.summary(),
            "ks": self.ks, "seeds": self.seeds, "n_test_points": len(self.test_indices),
            "test_indices": self.test_indices, "test_labels": self.test_labels,
            "full_run_gold_probability": self.full_probability.tolist(),
            "per_point": {name: {sign: self.delta[name][sign].tolist() for sign in SIGNS} for name in self.rows},
            "settings": self.settings,
        }

    def markdown(self) -> str:
        """The AUC-DEL table as Markdown (mean +- SE over test points)."""
        rows = self.summary()
        paired = "paired_reference" in rows[0] if rows else False
        head = "| method | AUC-DEL+ (lower is better) | AUC-DEL- (higher is better) |"
        if paired:
            head += f" DEL+ minus {rows[0]['paired_reference']} (paired) | DEL- minus {rows[0]['paired_reference']} (paired) |"
        lines = [head, "|---" * (5 if paired else 3) + "|"]
        for row in rows:
            line = (f"| {row['method']} | {row['auc_del_plus']:+.3f} ± {row['auc_del_plus_se']:.3f} "
                    f"| {row['auc_del_minus']:+.3f} ± {row['auc_del_minus_se']:.3f} |")
            if paired:
                line += (f" {row['paired_del_plus']:+.3f} ± {row['paired_del_plus_se']:.3f} "
                         f"| {row['paired_del_minus']:+.3f} ± {row['paired_del_minus_se']:.3f} |")
            lines.append(line)
        return "\n".join(lines)

    def rich_table(self, title: str = "case deletion"):
        """The AUC-DEL table for the terminal."""
        from rich.table import Table

        rows = self.summary()
        paired = bool(rows) and "paired_reference" in rows[0]
        table = Table(title=f"{title}: {len(self.test_indices)} test points, seeds {self.seeds}, k in {self.ks}")
        columns = ["method", "AUC-DEL+ (lower better)", "AUC-DEL- (higher better)"]
        if paired:
            columns += [f"DEL+ - {rows[0]['paired_reference']} (paired)", f"DEL- - {rows[0]['paired_reference']} (paired)"]
        for col in columns:
            table.add_column(col, justify="left" if col == "method" else "right")
        for row in rows:
            cells = [row["method"], f"{row['auc_del_plus']:+.4f} ± {row['auc_del_plus_se']:.4f}",
                     f"{row['auc_del_minus']:+.4f} ± {row['auc_del_minus_se']:.4f}"]
            if paired:
                cells += [f"{row['paired_del_plus']:+.4f} ± {row['paired_del_plus_se']:.4f}",
                          f"{row['paired_del_minus']:+.4f} ± {row['paired_del_minus_se']:.4f}"]
            table.add_row(*cells)
        return table
