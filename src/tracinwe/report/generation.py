"""A language model's completion explained, as JSON and as a self-contained HTML page.

`generation_view` turns a `tracinwe.generation.GenerationExplanation` into plain dicts (the
``--json`` output of ``tracinwe explain --generate``): the completion's tokens with their top
supporting documents, the top proponents and opponents with each one's score split by completion
token, every document cut into segments with its shared tokens' contributions. `generation_html`
renders that view: hover or click a completion token to see its supporting documents, their
shared tokens highlighted by contribution (blue supports, red opposes).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.io import write_text_atomic
from tracinwe.report.highlight import text_segments
from tracinwe.report.html import format_score, script_json, segments_html
from tracinwe.report.style import CSS
from tracinwe.scoring.influence import SIGN_CONVENTION

__all__ = ["generation_view", "generation_html", "render_generation", "readable_token", "index_generation_view",
           "contribution_scale"]


def readable_token(tokenizer, token: str) -> str:
    """A tokenizer's piece as the text it stands for (byte-level ``Ġthe`` -> `` the``)."""
    try:
        return tokenizer.convert_tokens_to_string([token])
    except Exception:  # a tokenizer without a decoder for pieces: show the piece
        return token


def _support_view(s, tokenizer, ids: Sequence[str], max_length: int, words: int | None) -> dict:
    from tracinwe.models.causal_lm import as_document

    text = as_document(s.document, tokenizer).text
    segments, _ = text_segments(tokenizer, text, {w.token_id: w.contribution for w in s.words}, max_length)
    shown = s.words if words is None else s.words[:words]
    return {
        "row": s.index, "id": ids[s.index], "score": s.score, "text": text,
        "words": [{**w.to_json(), "text": readable_token(tokenizer, w.token)} for w in shown],
        "segments": [seg.to_json() for seg in segments],
    }


def generation_view(out, tokenizer, ids: Sequence[str] | None = None, *, generated: bool = True,
                    max_length: int = 128, words: int | None = 5) -> dict:
    """The explanation as JSON-able dicts; ``ids`` name the training documents (default: their row numbers).

    Each proponent / opponent carries ``token_scores``: its score split by completion token (they
    sum to its ``score`` for full TracIn-WE).
    """
    ids = [str(i) for i in range(out.scores.shape[0])] if ids is None else [str(i) for i in ids]

    def neighbours(found) -> list[dict]:
        return [{**_support_view(s, tokenizer, ids, max_length, words),
                 "token_scores": out.token_scores[:, s.index].tolist()} for s in found]

    return {
        "prompt": out.prompt, "completion": out.completion, "generated": generated, "sign_convention": SIGN_CONVENTION,
        "n_train": int(out.scores.shape[0]),
        "tokens": [{"position": t.position, "token_id": t.token_id, "token": t.token,
                    "text": readable_token(tokenizer, t.token),
                    "supporters": [_support_view(s, tokenizer, ids, max_length, words) for s in t.supporters]}
                   for t in out.tokens],
        "proponents": neighbours(out.proponents), "opponents": neighbours(out.opponents),
    }


def _scale(view: dict) -> float:
    values = [abs(seg["contribution"]) for group in ([*view["proponents"], *view["opponents"]],
                                                     [s for t in view["tokens"] for s in t["supporters"]])
              for n in group for seg in n["segments"] if seg["contribution"] is not None]
    return float(np.percentile(values, 95)) if values else 0.0


def _card(n: dict, kind: str, scale: float, tokens: Sequence[dict] | None = None) -> str:
    words = ", ".join(f'<code>{escape(w["text"])}</code> {format_score(w["contribution"])}' for w in n["words"]
                      if w["contribution"] != 0)
    split = ""
    if tokens is not None:
        split = ('<div class="words">by completion token: '
                 + " ".join(f'<span class="tsplit">{escape(t["text"])} {format_score(v)}</span>'
                            for t, v in zip(tokens, n["token_scores"])) + "</div>")
    return (
        f'<div class="neighbor {kind}" data-row="{n["row"]}" data-id="{escape(n["id"])}" data-score="{n["score"]!r}">'
        f'<div class="nhead"><span class="score">{format_score(n["score"])}</span><span>document {escape(n["id"])}</span></div>'
        f'<div class="ntext">{segments_html(n["segments"], scale)}</div>'
        f'<div class="words">shared tokens: {words or "none shared"}</div>{split}</div>'
    )


_GEN_CSS = """
.completion { font-size: 18px; margin: 6px 0 12px; white-space: pre-wrap; }
.prompt { color: var(--muted); }
.gtok { border-bottom: 2px solid var(--pos); cursor: pointer; padding: 0 1px; white-space: pre-wrap; }
.gtok:hover, .gtok:focus, .gtok.active { background: #d8e6f5; outline: none; }
.tokpanel { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 10px 0; }
.tsplit { font-family: ui-monospace, Menlo, Consolas, monospace; margin-right: 6px; white-space: pre; }
"""

_GEN_SCRIPT = """
(function () {
  var panels = document.querySelectorAll('.tokpanel'), pinned = null;
  function show(i) {
    panels.forEach(function (p) { p.classList.toggle('hidden', p.dataset.token !== i); });
    document.querySelectorAll('.gtok').forEach(function (t) { t.classList.toggle('active', t.dataset.token === i); });
  }
  document.querySelectorAll('.gtok').forEach(function (t) {
    t.addEventListener('mouseenter', function () { show(t.dataset.token); });
    t.addEventListener('focus', function () { show(t.dataset.token); });
    t.addEventListener('mouseleave', function () { if (pinned !== null) show(pinned); });
    t.addEventListener('click', function () { pinned = t.dataset.token; show(pinned); });
  });
  if (panels.length) show(panels[0].dataset.token);
})();
"""


def generation_html(view: dict, title: str = "TracIn-WE: a completion explained", note: str = "") -> str:
    """The page as one HTML string: no network, every text escaped, the view embedded as JSON."""
    scale = _scale(view)
    tokens = view["tokens"]
    spans = "".join(
        f'<span class="gtok" tabindex="0" data-token="{i}" data-token-id="{t["token_id"]}" '
        f'title="{escape(t["token"])}: top support {format_score(t["supporters"][0]["score"]) if t["supporters"] else "none"}">'
        f'{escape(t["text"])}</span>' for i, t in enumerate(tokens))
    panels = "".join(
        f'<div class="tokpanel" data-token="{i}"><h3>documents that most support “{escape(t["text"])}”</h3>'
        + ("".join(_card(s, "proponent" if s["score"] > 0 else "opponent", scale) for s in t["supporters"]) or "<p>none</p>")
        + "</div>" for i, t in enumerate(tokens))
    columns = "".join(
        f'<div class="col {kind}s"><h3>{head}</h3>'
        + ("".join(_card(n, kind, scale, tokens) for n in view[key]) or "<p>none</p>") + "</div>"
        for kind, key, head in (("proponent", "proponents", "Proponents of the completion (score &gt; 0)"),
                                ("opponent", "opponents", "Opponents of the completion (score &lt; 0)")))
    how = "generated greedily by the final checkpoint" if view["generated"] else "given"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{CSS}{_GEN_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="sub">Completion {how}, explained against {view["n_train"]} training documents. {escape(note)}</p>'
        f'<div class="legend"><span>opposes (score &lt; 0)</span><span class="bar"></span><span>supports (score &gt; 0)</span>'
        f"<span>· hover or click a completion token to see the documents that support it</span></div>"
        f'<p class="sub">{escape(view["sign_convention"])}</p>'
        f'<section class="query"><p class="completion"><span class="prompt">{escape(view["prompt"])}</span>{spans}</p>'
        f"{panels}</section>"
        f'<h2>The whole completion</h2><div class="cols">{columns}</div>'
        f"<footer>tracinwe · TracIn-WE (Yeh et al., NeurIPS 2022) on the input word embeddings of a causal LM: "
        f"a token's contribution is the dot product of the two documents' gradients on its embedding row, "
        f"summed over checkpoints. Generated {stamp}.</footer>"
        f'<script type="application/json" id="tracinwe-data">{script_json(view)}</script>'
        f"<script>{_GEN_SCRIPT}</script></body></html>"
    )


def render_generation(view: dict, path: str | Path, title: str = "TracIn-WE: a completion explained",
                      note: str = "") -> Path:
    """Write `generation_html` of ``view`` to ``path`` atomically and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, generation_html(view, title, note))
    return path


def index_generation_view(index, prompt: str, completion: str | None = None, max_new_tokens: int = 8, k: int = 5,
                          words: int | None = 5, status=None) -> dict:
    """`generation_view` of a completion answered from an open causal-LM `tracinwe.index.Index`.

    The completion (the final checkpoint's greedy one when ``completion`` is None) gets its top ``k`` proponents
    and opponents from the index (exact); only those ``2k`` documents are split by completion token, so each
    token's supporters are chosen among them (``"token_supporters_from": "index neighbours"``). Rows are the
    index's. ``status(message)``: a context manager shown while each step runs (e.g. a spinner); None for none.
    What ``tracinwe explain --generate --index`` prints and ``POST /api/generate`` of ``tracinwe serve`` returns.
    """
    from contextlib import nullcontext

    from tracinwe.generation import generate_completion

    if not index.is_causal_lm:
        raise TracInWEError(f"the index at {str(index.path)!r} is of a classification model, not of a causal language model: "
                            "explaining a completion needs an index built on an LM run (tracinwe index build --run-dir LM_RUN)")
    step = status or (lambda message: nullcontext())
    tw = index.tracin
    generated = completion is None
    if generated:
        completion = generate_completion(tw.final, prompt, max_new_tokens)
    with step(f"searching {len(index)} indexed documents ..."):
        found = index.search([{"prompt": prompt, "completion": completion}], k=k)
    rows = list(dict.fromkeys([*found.proponent_indices[0].tolist(), *found.opponent_indices[0].tolist()]))
    with step(f"splitting the scores of {len(rows)} documents by completion token ..."):
        out = tw.explain_generation(prompt, train=index.examples(rows), completion=completion, k=k, words=None)
    view = generation_view(out, tw.final.tokenizer, index.ids(rows), generated=generated,
                           max_length=tw.max_length, words=words)
    for n in [*view["proponents"], *view["opponents"], *(s for t in view["tokens"] for s in t["supporters"])]:
        n["row"] = rows[n["row"]]  # a row of the index, not of the neighbours
    view["n_train"] = len(index)
    view["token_supporters_from"] = "index neighbours"  # each token's supporters among the 2k proponents / opponents
    return view


def contribution_scale(view: dict) -> float:
    """The colour scale of a view's highlighted tokens: the 95th percentile of |contribution| (0 when none)."""
    return _scale(view)
