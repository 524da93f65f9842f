"""The self-contained HTML report: one file, inline CSS/JS/SVG, every text escaped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np

from tracinwe.errors import TokenizerMismatchError
from tracinwe.io import write_text_atomic
from tracinwe.report.highlight import tokenizer_of
from tracinwe.report.plot import svg_histogram
from tracinwe.report.style import CSS
from tracinwe.report.view import colour, result_view, suspicious_view
from tracinwe.scoring.influence import SIGN_CONVENTION

__all__ = ["render_report", "report_html", "format_score", "segments_html", "aligning_tokenizer", "script_json"]


def format_score(value: float) -> str:
    """A score or contribution for people: signed, 3 significant digits."""
    return f"{value:+.3g}"


def aligning_tokenizer(source) -> tuple[object, int]:
    """``(fast tokenizer, max_length)`` that put token contributions on words: a `TracInWE`'s, or a fast tokenizer."""
    from tracinwe.tracin import TracInWE

    if isinstance(source, TracInWE):
        return tokenizer_of(source.final), source.max_length
    if not getattr(source, "is_fast", False):
        raise TokenizerMismatchError(f"tokenizer= is a {type(source).__name__}, not a fast HuggingFace tokenizer: "
                                     "pass a TracInWE (e.g. index.tracin) or AutoTokenizer(..., use_fast=True)")
    return source, int(getattr(source, "model_max_length", 512) or 512)


def script_json(value) -> str:
    """JSON safe inside a ``<script>`` element: ``<``, ``>`` and ``&`` as unicode escapes."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def segments_html(segments: Sequence[dict], scale: float) -> str:
    """Text with each shared word in a ``<mark>`` coloured by its contribution (title shows the value)."""
    out = []
    for s in segments:
        text = escape(s["text"])
        value = s["contribution"]
        if value is None:
            out.append(text)
            continue
        pieces = " ".join(s["tokens"])
        out.append(
            f'<mark class="w" data-contribution="{value!r}" style="background:{colour(value, scale)}" '
            f'title="{escape(pieces)}: {format_score(value)}">{text}</mark>'
        )
    return "".join(out)


def _neighbor_html(n: dict, kind: str, scale: float, explained_label: int) -> str:
    differs = ' class="differs"' if n["label"] != explained_label else ""
    special = ""
    if n["special"] is not None:
        special = (
            f'<div class="special">[CLS]/[SEP] (sentence level): <mark class="w sp" data-contribution="{n["special"]!r}" '
            f'style="background:{colour(n["special"], scale)}" title="special tokens: {format_score(n["special"])}">'
            f'{format_score(n["special"])}</mark></div>'
        )
    words = ", ".join(f'{escape(w["token"])} {format_score(w["contribution"])}' for w in n["words"])
    return (
        f'<div class="neighbor {kind}" data-row="{n["row"]}" data-id="{escape(n["id"])}" data-score="{n["score"]!r}">'
        f'<div class="nhead"><span class="score">{format_score(n["score"])}</span>'
        f'<span{differs}>label: {escape(n["label_name"])}</span><span>id {escape(n["id"])}</span></div>'
        f'<div class="ntext">{segments_html(n["segments"], scale)}</div>{special}'
        f'<div class="words">top words: {words or "none shared"}</div></div>'
    )


def _query_html(v: dict, i: int, scores_row: np.ndarray | None) -> str:
    state = "right" if v["correct"] else "wrong"
    verdict = ("correct" if v["correct"] else "misclassified") if v["gold"] else "explaining the prediction"
    probs = "".join(
        f'<span class="prob">{escape(name)} {p:.2f}</span>' for name, p in zip(v["label_names"], v["probabilities"])
    )
    hist = ""
    if scores_row is not None:
        marks = [n["score"] for n in v["proponents"] + v["opponents"]]
        hist = (f'<div class="words">score against each of the {len(scores_row)} training examples '
                f'(ticks: the ones shown)</div>'
                + svg_histogram(scores_row, f"scores of all {len(scores_row)} training examples", marks=marks))
    columns = "".join(
        f'<div class="col {kind}s"><h3>{title}</h3>'
        + ("".join(_neighbor_html(n, kind, v["scale"], v["label"]) for n in v[key]) or "<p>none</p>")
        + "</div>"
        for kind, key, title in (("proponent", "proponents", "Proponents (score &gt; 0)"),
                                 ("opponent", "opponents", "Opponents (score &lt; 0)"))
    )
    gold = f'<span>gold: <b class="gold">{escape(v["label_name"])}</b></span>' if v["gold"] else ""
    return (
        f'<section class="query {state}" data-index="{i}" data-correct="{str(v["correct"]).lower()}">'
        f'<p class="qtext">{escape(v["text"])}</p><div class="meta">{gold}'
        f'<span>prediction: <b class="prediction">{escape(v["prediction_name"])}</b> '
        f'(<span class="probability">{v["probability"]:.3f}</span>)</span>'
        f'<span class="badge {state}">{verdict}</span><span class="probs">{probs}</span></div>{hist}'
        f'<div class="cols">{columns}</div></section>'
    )


def _suspicious_html(rows: list[dict], self_influence: np.ndarray | None) -> str:
    if not rows:
        return ""
    hist = ""
    if self_influence is not None:
        hist = ('<div class="words">self-influence of every training example (ticks: the ones listed)</div>'
                + svg_histogram(self_influence, "self-influence of every training example",
                                marks=[r["self_influence"] for r in rows]))
    body = "".join(
        f'<tr data-row="{r["row"]}" data-id="{escape(r["id"])}"><td class="num">{k + 1}</td>'
        f'<td class="num si">{r["self_influence"]:.4g}</td><td>{escape(r["label_name"])}</td>'
        f'<td>{escape(r["text"])}</td><td class="num">{escape(r["id"])}</td></tr>'
        for k, r in enumerate(rows)
    )
    return (
        '<h2 id="suspicious">Suspicious training labels</h2>'
        '<p class="sub">Highest self-influence first: examples the model had to push hardest to fit, '
        f"often mislabeled or atypical. Check their labels.</p>{hist}"
        '<table class="susp"><thead><tr><th>#</th><th>self-influence</th><th>label</th><th>text</th><th>id</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


_SCRIPT = """
document.getElementById('only-wrong').addEventListener('change', function (e) {
  document.querySelectorAll('section.query[data-correct="true"]').forEach(function (s) {
    s.classList.toggle('hidden', e.target.checked);
  });
});
"""


def report_html(
    results: Sequence, suspicious: Sequence, label_names: Sequence[str] | None, title: str, tokenizer,
    *, max_length: int = 128, scores: np.ndarray | None = None, self_influence: np.ndarray | None = None,
    words_shown: int = 5, gold: bool = True, note: str = "",
) -> str:
    """The report as one HTML string (see `render_report`)."""
    views = [result_view(r, tokenizer, label_names, max_length, words_shown, gold) for r in results]
    susp = suspicious_view(suspicious)
    wrong = sum(not v["correct"] for v in views)
    score_hist = ""
    if scores is not None and np.size(scores):
        score_hist = ('<div class="words">all test x training scores</div>'
                      + svg_histogram(np.ravel(scores), f"all {np.size(scores)} test x train scores", width=480, height=110))
    queries = "".join(_query_html(v, i, None if scores is None else scores[i]) for i, v in enumerate(views))
    data = script_json({"results": views, "suspicious": susp})
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = f"{len(views)} test examples ({wrong} misclassified)" if gold else f"{len(views)} texts"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="sub">{summary}, {len(susp)} suspicious labels. {escape(note)}</p>'
        f'<div class="legend"><span>opponent (score &lt; 0)</span><span class="bar"></span><span>proponent (score &gt; 0)</span>'
        f"<span>· word colour = its share of the score; hover a word for its value</span></div>"
        f'<p class="sub">{escape(SIGN_CONVENTION)}</p>{score_hist}'
        f'<div class="toolbar"><label><input type="checkbox" id="only-wrong"> only misclassified</label>'
        f' · <a href="#suspicious">suspicious labels</a></div>'
        f'<h2>Test examples</h2>{queries}{_suspicious_html(susp, self_influence)}'
        f"<footer>tracinwe · TracIn-WE (Yeh et al., NeurIPS 2022): TracIn on the input word embeddings; "
        f"a word's contribution is the dot product of the two examples' gradients on its embedding row, "
        f"summed over checkpoints. Generated {stamp}.</footer>"
        f'<script type="application/json" id="tracinwe-data">{data}</script><script>{_SCRIPT}</script></body></html>'
    )


def render_report(
    results: Sequence, suspicious: Sequence, label_names: Sequence[str] | None, title: str, path: str | Path,
    *, tokenizer=None, max_length: int | None = None, scores: np.ndarray | None = None,
    self_influence: np.ndarray | None = None, words_shown: int = 5, gold: bool = True, note: str = "",
) -> Path:
    """Write the self-contained HTML report and return its path (written atomically).

    Args:
        results: `QueryResult`s (from ``Index.query`` or `tracinwe.explain.explain_with_tracin`); ``label`` is the gold label.
        suspicious: `Neighbor`s of highest self-influence (``Index.suspicious``).
        label_names: class names, by index.
        title: the page title.
        path: where to write the file.
        tokenizer: a `TracInWE` (e.g. ``index.tracin``) or a fast HF tokenizer (aligns tokens to words).
        scores: optional (n_test, n_train) score matrix: one histogram per test example.
        self_influence: optional (n_train,) values: a histogram above the suspicious labels.
        words_shown: top words listed under each neighbour (all shared words are highlighted).
    """
    if tokenizer is None:
        raise TypeError("render_report needs tokenizer= (a TracInWE or a fast tokenizer) to align words")
    tok, default_length = aligning_tokenizer(tokenizer)
    html = report_html(
        results, suspicious, label_names, title, tok, max_length=max_length or default_length, scores=scores,
        self_influence=self_influence, words_shown=words_shown, gold=gold, note=note,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, html)
    return path
