"""Print the Markdown tables of docs/evaluation.md and the README from the evaluation JSON in benchmarks/results/.

Usage::

    python benchmarks/evaluation_tables.py            # every lds_*, deletion_*, fix_* result present
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tracinwe.evaluate.deletion_report import comparison_cell
from tracinwe.evaluate.fix import fix_markdown

RESULTS = Path(__file__).resolve().parent / "results"


def fmt(mean: float, se: float) -> str:
    return f"{mean:+.3f} ± {se:.3f}"


def paired(row: dict, ref: str) -> str:
    c = row.get("paired", {}).get(ref)
    return "" if c is None else f"{c['mean']:+.3f} ± {c['se']:.3f} (p={c['wilcoxon_p']:.1g})"


def lds_table(path: Path) -> str:
    d = json.loads(path.read_text())
    e = d["experiment"]
    gate = e["noise_gate"]
    model = e["setup"]["model"]
    head = (f"**{path.stem}**: {e['setup']['source']}, {model['architecture']} "
            f"({model['optimizer']} lr {model['learning_rate']}, "
            f"{model['epochs']} epochs), {e['n_train']} training examples, {len(e['test_points'])} test points "
            f"({'/'.join(map(str, e['points_per_class']))} per class), {d['n_subsets']} subsets of {d['fraction']:.0%} x seeds "
            f"{d['seeds']}; held-out accuracy {e['heldout_accuracy']:.3f}; retraining noise median |Δp| "
            f"{gate['median_abs_delta']:.4f} (k={gate['k']}, gate {gate['threshold']}: {'ok' if gate['passed'] else 'OVER'}); "
            f"saturated points per seed {e['saturated_points_by_seed']}.\n\n")
    lines = ["| method | LDS ± SE | per seed | − TracIn-last (paired, Wilcoxon p) | − TF-IDF (paired) "
             "| − random (paired) |",
             "|---|---|---|---|---|---|"]
    for row in d["summary"]:
        seeds = ", ".join(f"{v:+.3f}" for v in row["lds_by_seed"])
        lines.append(f"| {row['method']} | {fmt(row['lds'], row['lds_se'])} | {seeds} | {paired(row, 'TracIn-last')} "
                     f"| {paired(row, 'TF-IDF')} | {paired(row, 'random')} |")
    over = "no recommendation: over the noise gate, these retrains cannot rank methods"
    verdict = d["recommendation"] if gate["passed"] else over
    return head + "\n".join(lines) + f"\n\n{verdict}\n"


def deletion_table(path: Path) -> str:
    d = json.loads(path.read_text())
    e, s = d["experiment"], d["settings"]
    gate = s["noise_gate"]
    head = (f"**{path.stem}**: {e['setup']['source']}, {e['setup']['model']['architecture']}, {e['n_train']} training "
            f"examples, {d['n_test_points']} complete test points of {len(e['test_points'])} "
            f"({'/'.join(map(str, e['points_per_class']))} per class drawn), k ∈ {d['ks']}, seeds {d['seeds']} (each scored "
            f"on its own run); held-out accuracy {e['heldout_accuracy']:.3f}; retraining noise median |Δp| "
            f"{gate['median_abs_delta']:.4f} (gate {gate['threshold']}: {'ok' if gate['passed'] else 'OVER'}); saturated "
            f"points per seed {d['saturated_points_by_seed']}.\n\n")
    refs = [r for r in ("TracIn-last", "TF-IDF", "random-control") if any(row["method"] == r for row in d["summary"])]
    if "TracIn-last" not in refs and "TracIn-WE" in d["per_point"]:  # a secondary run: every baseline against TracIn-WE
        refs.insert(0, "TracIn-WE")
        for row in d["summary"]:
            if row["method"] != "TracIn-WE":
                row.setdefault("comparisons", {})["TracIn-WE"] = against(d, row["method"], "TracIn-WE")
    lines = ["| method | AUC-DEL+ ↓ | AUC-DEL- ↑ | DEL- − DEL+ | log-odds DEL+ / DEL- |"
             + "".join(f" − {r}: DEL+ / DEL- (paired, p) |" for r in refs), "|---" * (5 + len(refs)) + "|"]
    for row in d["summary"]:
        line = (f"| {row['method']} | {fmt(row['auc_del_plus'], row['auc_del_plus_se'])} | "
                f"{fmt(row['auc_del_minus'], row['auc_del_minus_se'])} | {fmt(row['gap_minus_minus_plus'], row['gap_se'])} | "
                f"{row['log_odds_auc_del_plus']:+.2f} / {row['log_odds_auc_del_minus']:+.2f} |")
        line += "".join(comparison_cell(row.get("comparisons", {}).get(r)) for r in refs)
        lines.append(line)
    return head + "\n".join(lines) + "\n"


def against(d: dict, method: str, reference: str) -> dict:
    """Paired per-point comparison ``method - reference`` of AUC-DEL+ and AUC-DEL- (mean over k)."""
    import numpy as np

    from tracinwe.evaluate.statistics import paired_comparison

    per = d["per_point"]
    return {sign: paired_comparison(np.mean(per[method][sign], axis=1), np.mean(per[reference][sign], axis=1)).to_json()
            for sign in ("del+", "del-")}


def fix_table(path: Path) -> str:
    d = json.loads(path.read_text())
    seeds = d["setup"]["experiment"]["seeds"]
    head = (f"**{path.stem}**: {d['setup']['experiment']['source']}, {d['n_train']} training examples, mistakes from "
            f"{d['n_heldout']} held-out texts, seeds {seeds} (cases per seed "
            f"{[len(v['cases']) for v in d['per_seed'].values()]}), held-out accuracy {d['heldout_accuracy']:.3f}; "
            f"{d['setup']['delete_count']} rows edited by every strategy.\n\n")
    return head + fix_markdown(d["summary"]) + "\n"


def main() -> int:
    for pattern, render in (("lds_*.json", lds_table), ("deletion_*.json", deletion_table), ("fix_*.json", fix_table)):
        for path in sorted(RESULTS.glob(pattern)):
            try:
                print(render(path))
            except KeyError as exc:
                print(f"{path.name}: older format (no {exc}), skipped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
