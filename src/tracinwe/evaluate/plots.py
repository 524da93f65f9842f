"""Evaluation results drawn: LDS per method with its 95% interval (PNG, matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

from tracinwe.evaluate.lds import LDSResult
from tracinwe.io import save_figure_atomic


def plot_lds(result: LDSResult, path: str | Path, title: str = "LDS") -> Path:
    """A horizontal bar per method (best on top): mean LDS over test points ± 1.96 SE, chance at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.summary()[::-1]
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(rows) + 1.2))
    means = [r["lds"] for r in rows]
    ax.barh(range(len(rows)), means, xerr=[1.96 * r["lds_se"] for r in rows], capsize=3,
            color=["#2b6cb0" if m > 0 else "#c53030" for m in means])
    ax.set_yticks(range(len(rows)), [r["method"] for r in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"LDS (Spearman; {len(result.point_rows)} test points, {result.n_subsets} subsets, seeds {result.seeds})")
    ax.set_title(title)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return Path(path)
