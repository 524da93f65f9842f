"""Case-deletion results: DEL curves per method, AUC-DEL with standard errors, tables and JSON."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tracinwe.evaluate.points import saturated_count
from tracinwe.evaluate.statistics import log_odds, mean_and_se, paired_comparison

SIGNS = ("del+", "del-")
CONTROL = "random-control"
#: What every method is compared with, paired per test point, when it was run.
REFERENCES = ("TracIn-last", "TF-IDF", CONTROL)


def comparison_cell(comparison: dict | None) -> str:
    """A Markdown cell ``" DEL+ ± SE (p) / DEL- ± SE (p) |"`` of one paired comparison (empty when absent)."""
    if comparison is None:
        return " |"
    plus, minus = comparison["del+"], comparison["del-"]
    return (f" {plus['mean']:+.3f} ± {plus['se']:.3f} (p={plus['wilcoxon_p']:.2g}) / "
            f"{minus['mean']:+.3f} ± {minus['se']:.3f} (p={minus['wilcoxon_p']:.2g}) |")


@dataclass
class DeletionResult:
    """``delta[method][sign]``: (n_points, n_ks) change of the gold-class probability, mean over seeds.

    ``delta_by_seed`` keeps each seed's values (n_seeds, n_points, n_ks) and ``log_odds_by_seed`` the
    change of the gold log-odds. The random control (if run) is ``delta["random-control"]["del+"]``
    (= ``["del-"]``: one random deletion set per (k, seed), evaluated on every test point).
    """

    methods: list[str]
    ks: list[int]
    seeds: list[int]
    test_indices: list[int]
    test_labels: list[int]
    delta: dict[str, dict[str, np.ndarray]]
    full_probability: np.ndarray  # (n_seeds, n_points) p_gold of the full-data runs
    settings: dict = field(default_factory=dict)
    delta_by_seed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    log_odds_by_seed: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def from_probabilities(
        cls, probabilities: Mapping[str, np.ndarray], methods: Sequence[str], ks: Sequence[int],
        seeds: Sequence[int], test_labels: Sequence[int], test_indices: Sequence[int], random_control: bool,
        settings: dict | None = None, points: Sequence[int] | None = None,
    ) -> "DeletionResult":
        """Assemble from retrain probabilities (n_points, C) keyed as in `plan_retrains` (only ``points`` if given)."""
        points = list(range(len(test_labels))) if points is None else list(points)
        gold = np.asarray(test_labels)[points]

        def gold_p(key: str) -> np.ndarray:
            return np.asarray(probabilities[key], dtype=np.float64)[points, gold]

        def gold_lo(key: str) -> np.ndarray:
            return log_odds(np.asarray(probabilities[key], dtype=np.float64)[points], gold)

        full_p = np.stack([gold_p(f"full__s{s}") for s in seeds])
        full_lo = np.stack([gold_lo(f"full__s{s}") for s in seeds])
        rows = {name: name for name in methods}
        if random_control:
            rows[CONTROL] = CONTROL
        by_seed: dict[str, dict[str, np.ndarray]] = {}
        lo_by_seed: dict[str, dict[str, np.ndarray]] = {}
        for name in rows:
            by_seed[name], lo_by_seed[name] = {}, {}
            for sign in SIGNS:
                d, lo = np.zeros((len(seeds), len(points), len(ks))), np.zeros((len(seeds), len(points), len(ks)))
                for i, s in enumerate(seeds):
                    for j, k in enumerate(ks):
                        if name == CONTROL:
                            d[i, :, j] = gold_p(f"{CONTROL}__k{k}__s{s}") - full_p[i]
                            lo[i, :, j] = gold_lo(f"{CONTROL}__k{k}__s{s}") - full_lo[i]
                            continue
                        for row, t in enumerate(points):
                            key = f"{name}__t{t}__{sign}__k{k}__s{s}"
                            d[i, row, j] = gold_p(key)[row] - full_p[i, row]
                            lo[i, row, j] = gold_lo(key)[row] - full_lo[i, row]
                by_seed[name][sign], lo_by_seed[name][sign] = d, lo
        delta = {name: {sign: values.mean(axis=0) for sign, values in per.items()} for name, per in by_seed.items()}
        return cls(list(methods), list(ks), list(seeds), [list(test_indices)[t] for t in points], gold.tolist(), delta,
                   full_p, settings or {}, by_seed, lo_by_seed)

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

    def per_point_auc(self, method: str, sign: str, log_odds: bool = False) -> np.ndarray:
        """Each point's AUC-DEL (mean over k and seeds), of the probability or of the gold log-odds."""
        values = (self.log_odds_by_seed if log_odds else self.delta_by_seed)[method][sign]
        return values.mean(axis=(0, 2))

    def summary(self, reference: str = "TracIn-last") -> list[dict]:
        """One dict per method: AUC-DEL+/- with standard errors, the DEL curves, the DEL- minus DEL+
        gap, the log-odds AUCs, paired comparisons (SE, 95% CI, Wilcoxon p) with `REFERENCES`, and the
        paired difference to ``reference`` (when it was run)."""
        out = []
        for name in self.rows:
            (plus, plus_se), (minus, minus_se) = self.auc(name, "del+"), self.auc(name, "del-")
            row = {"method": name, "auc_del_plus": plus, "auc_del_plus_se": plus_se,
                   "auc_del_minus": minus, "auc_del_minus_se": minus_se,
                   "del_plus_by_k": self.curve(name, "del+"), "del_minus_by_k": self.curve(name, "del-")}
            if self.delta_by_seed:
                gap = self.per_point_auc(name, "del-") - self.per_point_auc(name, "del+")
                row["gap_minus_minus_plus"], row["gap_se"] = mean_and_se(gap)
                row["auc_del_plus_by_seed"] = self.delta_by_seed[name]["del+"].mean(axis=(1, 2)).tolist()
                row["auc_del_minus_by_seed"] = self.delta_by_seed[name]["del-"].mean(axis=(1, 2)).tolist()
                for sign, key in (("del+", "log_odds_auc_del_plus"), ("del-", "log_odds_auc_del_minus")):
                    row[key], row[key + "_se"] = mean_and_se(self.per_point_auc(name, sign, log_odds=True))
                row["comparisons"] = {
                    ref: {sign: paired_comparison(self.per_point_auc(name, sign), self.per_point_auc(ref, sign)).to_json()
                          for sign in SIGNS}
                    for ref in REFERENCES if ref in self.delta and ref != name and len(self.test_indices) > 1}
            if reference in self.delta:
                (dp, dp_se), (dm, dm_se) = (self.paired_difference(name, reference, s) for s in SIGNS)
                row.update({"paired_reference": reference, "paired_del_plus": dp, "paired_del_plus_se": dp_se,
                            "paired_del_minus": dm, "paired_del_minus_se": dm_se})
            out.append(row)
        return out

    def to_json(self) -> dict:
        full = self.full_probability
        return {
            "summary": self.summary(),
            "ks": self.ks, "seeds": self.seeds, "n_test_points": len(self.test_indices),
            "test_indices": self.test_indices, "test_labels": self.test_labels,
            "full_run_gold_probability": full.tolist(),
            "saturated_points_by_seed": [saturated_count(p) for p in full],
            "per_point": {name: {sign: self.delta[name][sign].tolist() for sign in SIGNS} for name in self.rows},
            "per_seed_per_point": {name: {sign: v.tolist() for sign, v in per.items()}
                                   for name, per in self.delta_by_seed.items()},
            "per_seed_per_point_log_odds": {name: {sign: v.tolist() for sign, v in per.items()}
                                            for name, per in self.log_odds_by_seed.items()},
            "settings": self.settings,
        }

    def markdown(self) -> str:
        """The AUC-DEL table as Markdown: mean ± SE over test points, and paired differences (± SE,
        Wilcoxon p) to TracIn-last, TF-IDF and the random control where they were run."""
        rows = self.summary()
        refs = [ref for ref in REFERENCES if ref in self.delta]
        head = ("| method | AUC-DEL+ ↓ | AUC-DEL- ↑ | DEL- minus DEL+ |"
                + "".join(f" DEL+ / DEL- minus {r} (paired) |" for r in refs))
        lines = [head, "|---" * (4 + len(refs)) + "|"]
        for row in rows:
            gap = f"{row['gap_minus_minus_plus']:+.3f} ± {row['gap_se']:.3f}" if "gap_se" in row else ""
            line = (f"| {row['method']} | {row['auc_del_plus']:+.3f} ± {row['auc_del_plus_se']:.3f} "
                    f"| {row['auc_del_minus']:+.3f} ± {row['auc_del_minus_se']:.3f} | {gap} |")
            line += "".join(comparison_cell(row.get("comparisons", {}).get(ref)) for ref in refs)
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
        columns += [f"DEL± - {ref} (paired)" for ref in ("TF-IDF", CONTROL) if ref in self.delta]
        for col in columns:
            table.add_column(col, justify="left" if col == "method" else "right")
        for row in rows:
            cells = [row["method"], f"{row['auc_del_plus']:+.4f} ± {row['auc_del_plus_se']:.4f}",
                     f"{row['auc_del_minus']:+.4f} ± {row['auc_del_minus_se']:.4f}"]
            if paired:
                cells += [f"{row['paired_del_plus']:+.4f} ± {row['paired_del_plus_se']:.4f}",
                          f"{row['paired_del_minus']:+.4f} ± {row['paired_del_minus_se']:.4f}"]
            for ref in ("TF-IDF", CONTROL):
                if ref in self.delta:
                    c = row.get("comparisons", {}).get(ref)
                    cells.append("" if c is None else
                                 f"{c['del+']['mean']:+.3f} (p={c['del+']['wilcoxon_p']:.2g}) / "
                                 f"{c['del-']['mean']:+.3f} (p={c['del-']['wilcoxon_p']:.2g})")
            table.add_row(*cells)
        return table
