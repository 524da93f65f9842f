"""Explanations in the terminal: rich tables with the shared words coloured by contribution.

Every string from the data (texts, labels, ids, tokens) goes through `literal`:
it prints as written, never as rich markup or terminal control sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from tracinwe.report.terminal import literal
from tracinwe.report.view import label_name

__all__ = ["result_tables", "suspicious_table", "words_text"]


#: What the words column says when the words were not computed (``words=0``).
WORDS_NOT_COMPUTED = "not computed (--words 0)"


def words_text(words, limit: int = 4, skip_special: Sequence[str] = ("[CLS]", "[SEP]", "<s>", "</s>")) -> Text:
    """``word +1.2e-03, ...``: the heaviest shared words, blue for proponent side, red for opponent side."""
    if not words:
        return Text("no shared words", style="dim")
    out = Text()
    shown = [w for w in words if w.token not in skip_special][:limit]
    for i, w in enumerate(shown):
        if i:
            out.append(", ")
        out.append(literal(w.token, style="bold blue" if w.contribution > 0 else "bold red"))
        out.append(f" {w.contribution:+.2g}", style="dim")
    return out if shown else Text("only [CLS]/[SEP]", style="dim")


def result_tables(result, label_names: Sequence[str] | None, gold: bool, words: bool = True) -> tuple[Text, list[Table]]:
    """A headline (text, prediction, probability, verdict) and the proponent / opponent tables.

    ``words=False``: the words were not computed (``--words 0``), and the column says so.
    """
    pred = int(result.prediction)
    head = Text()
    head.append(literal(f"“{result.text}”\n", style="bold"))
    head.append(literal(f"  prediction: {label_name(pred, label_names)} (p={result.probabilities[pred]:.3f})"))
    if gold:
        ok = pred == int(result.label)
        head.append(literal(f"   gold: {label_name(result.label, label_names)} "))
        head.append("correct" if ok else "MISCLASSIFIED", style="green" if ok else "bold red")
    tables = []
    for title, neighbors in (("proponents (score > 0)", result.proponents), ("opponents (score < 0)", result.opponents)):
        table = Table(title=title, title_justify="left", expand=True)
        table.add_column("score", justify="right", width=10, no_wrap=True)
        table.add_column("label", width=10)
        table.add_column("training text", ratio=3)
        table.add_column("words that carry it", ratio=2)
        for n in neighbors:
            shared = words_text(n.words) if words else Text(WORDS_NOT_COMPUTED, style="dim")
            score = Text(f"{n.score:+.3g}", style="blue" if n.score > 0 else "red")
            table.add_row(score, literal(n.label_name), literal(n.text), shared)
        tables.append(table)
    return head, tables


def suspicious_table(neighbors) -> Table:
    """Training examples by self-influence, highest first: the labels to check."""
    table = Table(title="suspicious training labels (highest self-influence first)", title_justify="left", expand=True)
    table.add_column("#", justify="right", width=4)
    table.add_column("self-influence", justify="right", width=14, no_wrap=True)
    table.add_column("label", width=10)
    table.add_column("id", width=8)
    table.add_column("text", ratio=1)
    for k, n in enumerate(neighbors, 1):
        table.add_row(str(k), f"{n.score:.4g}", literal(n.label_name), literal(n.id), literal(n.text))
    return table
