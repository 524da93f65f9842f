"""A small inline SVG histogram (no plotting library, no network)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

__all__ = ["histogram_counts", "svg_histogram"]


def histogram_counts(values: Sequence[float], bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """``(counts (bins,), edges (bins + 1,))`` of the finite values; one unit-wide bin if all are equal."""
    data = np.asarray(values, dtype=float)
    data = data[np.isfinite(data)]
    if data.size == 0:
        return np.zeros(0, dtype=int), np.zeros(1)
    lo, hi = float(data.min()), float(data.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.histogram(data, bins=bins, range=(lo, hi))


def svg_histogram(
    values: Sequence[float], title: str, bins: int = 30, width: int = 320, height: int = 90,
    marks: Sequence[float] = (), zero_line: bool = True,
) -> str:
    """An inline ``<svg>`` histogram of ``values``; ``marks`` (e.g. the scores shown) drawn as ticks.

    Bars right of 0 are blue, left of 0 red (the sign convention's colours).
    """
    counts, edges = histogram_counts(values, bins)
    pad_bottom, pad_top = 16, 4
    plot_h = height - pad_bottom - pad_top
    parts = [
        f'<svg class="hist" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    if counts.size:
        lo, hi = float(edges[0]), float(edges[-1])
        x = lambda v: (float(v) - lo) / (hi - lo) * width  # noqa: E731
        top = max(int(counts.max()), 1)
        bar_w = width / len(counts)
        for i, c in enumerate(counts):
            if c == 0:
                continue
            h = max(1.0, c / top * plot_h)
            centre = (edges[i] + edges[i + 1]) / 2
            fill = "#2166ac" if centre >= 0 else "#b2182b"
            parts.append(
                f'<rect x="{i * bar_w:.1f}" y="{pad_top + plot_h - h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{fill}"><title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {int(c)}</title></rect>'
            )
        if zero_line and lo < 0 < hi:
            parts.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="0" y2="{pad_top + plot_h}" '
                         'stroke="#555" stroke-dasharray="2,2"/>')
        for m in marks:
            if lo <= m <= hi:
                parts.append(f'<line class="mark" x1="{x(m):.1f}" x2="{x(m):.1f}" y1="{pad_top + plot_h}" '
                             f'y2="{pad_top + plot_h + 5}" stroke="#000"/>')
        parts.append(f'<text x="0" y="{height - 2}" font-size="10">{lo:.3g}</text>')
        parts.append(f'<text x="{width}" y="{height - 2}" font-size="10" text-anchor="end">{hi:.3g}</text>')
    else:
        parts.append(f'<text x="4" y="{height / 2}" font-size="11">no values</text>')
    parts.append("</svg>")
    return "".join(parts)
