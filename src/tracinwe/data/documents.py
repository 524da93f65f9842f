"""Language-model training data: documents (a text column) or prompt/completion pairs, no labels.

`load_documents` reads the same sources as `load_dataset_source` (``bundled:NAME``, a
csv/tsv/jsonl/json/parquet file, a saved HF dataset folder or a hub name) but needs no label
column. A missing column, an empty text, prompt or completion, or a source without rows is a
one-line `DataError` naming the row as its file numbers it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

__all__ = ["LMDocuments", "load_documents"]


@dataclass
class LMDocuments:
    """Training examples of a language model: strings or ``{"prompt", "completion"}`` dicts, with stable ids."""

    examples: list[Any]
    ids: list[str]
    name: str = ""
    columns: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def subset(self, rows: list[int]) -> LMDocuments:
        return LMDocuments([self.examples[i] for i in rows], [self.ids[i] for i in rows], self.name, dict(self.columns))

    def sample(self, n: int, seed: int = 0) -> LMDocuments:
        """``n`` rows drawn without replacement (seeded), in their original order; all rows if ``n >= len``."""
        if n >= len(self):
            return self
        rows = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return self.subset(rows.tolist())

    def split(self, fraction: float, seed: int = 0) -> tuple[LMDocuments, LMDocuments]:
        """``(kept, held out)``: a seeded ``fraction`` of the rows held out."""
        order = np.random.default_rng(seed).permutation(len(self))
        n_held = int(round(fraction * len(self)))
        return self.subset(sorted(order[n_held:].tolist())), self.subset(sorted(order[:n_held].tolist()))

    def texts(self) -> list[str]:
        """Each example as one text (prompt + completion for pairs)."""
        return [e if isinstance(e, str) else e["prompt"] + e["completion"] for e in self.examples]


def _columns_of(source: str, split: str) -> tuple[dict[str, list[Any]], list[str], str, list[str] | None]:
    """``(columns, row names, source name, ids)`` of a file or HF dataset; bundled corpora give their text and ids."""
    from .files import _read_columns, table_format
    from .sources import describe_source_kind, load_dataset_source

    kind = describe_source_kind(source)
    if kind == "bundled":
        data = load_dataset_source(source, split=split)
        return {"text": data.texts}, [f"row {i}" for i in range(len(data))], data.name, list(data.ids or [])
    path = Path(source).expanduser()
    if kind == "file":
        fmt = table_format(path)
        if fmt is None:
            raise DataError(f"cannot tell the format of {path.name}; use a .csv, .tsv, .jsonl, .json or .parquet file")
        try:
            columns, rows = _read_columns(path, fmt)
        except UnicodeDecodeError as exc:
            raise DataError(f"cannot read {path.name} as UTF-8 {fmt}: {exc}; re-save it as UTF-8") from None
        return columns, rows, path.name, None
    if table_format(path) is not None or source.startswith((".", "/", "~")):
        raise DataError(f"data file {source!r} not found; check the path")
    try:
        import datasets

        ds = datasets.load_from_disk(str(path)) if kind == "hf-disk" else datasets.load_dataset(source, split=split)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"split {split!r} not in {source!r}; available splits: {', '.join(ds)}")
            ds = ds[split]
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types (network, format, missing config)
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"could not load HF dataset {source!r}: {type(exc).__name__}: {first}; "
                        "pass a local file or folder when offline") from None
    return {c: list(ds[c]) for c in ds.column_names}, [f"row {i}" for i in range(len(ds))], source, None


def _column(columns: dict[str, list[Any]], name: str, flag: str, where: str) -> list[Any]:
    if name not in columns:
        raise DataError(f"column {name!r} not found in {where}; available: {', '.join(columns) or '(none)'}. Pass {flag}")
    return columns[name]


def _text(value: Any, what: str, row: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if value is None else ("empty" if isinstance(value, str) else f"a {type(value).__name__}")
        raise DataError(f"{row} of {where}: {what} is {shown}; fill it in or remove the row")
    return value


def load_documents(source: str | Path, text_column: str | None = None, prompt_column: str | None = None,
                   completion_column: str | None = None, split: str = "train") -> LMDocuments:
    """Documents from ``text_column`` (default ``text``), or prompt/completion pairs from the two columns.

    Bundled corpora give their texts (their layout is fixed: no column options). Rows keep their
    order; ids are the bundled ids or the row numbers from 0.
    """
    source = str(source)
    if (prompt_column is None) != (completion_column is None):
        raise DataError("pass both --prompt-column and --completion-column (or neither, for plain documents)")
    if prompt_column is not None and text_column is not None:
        raise DataError("pass --text-column for documents or --prompt-column/--completion-column for pairs, not both")
    columns, rows, where, ids = _columns_of(source, split)
    if source.startswith("bundled:") and (prompt_column or text_column not in (None, "text")):
        raise DataError(f"{source} has one text column and no prompt/completion: drop the column options")
    if not rows:
        raise DataError(f"{where} has no rows; add one document per row")
    if prompt_column is not None:
        assert completion_column is not None
        prompts = _column(columns, prompt_column, "--prompt-column", where)
        completions = _column(columns, completion_column, "--completion-column", where)
        examples: list[Any] = [
            {"prompt": _text(p, "the prompt", r, where), "completion": _text(c, "the completion", r, where)}
            for p, c, r in zip(prompts, completions, rows)
        ]
        chosen = {"prompt_column": prompt_column, "completion_column": completion_column}
    else:
        name = text_column or "text"
        examples = [_text(t, "the text", r, where) for t, r in zip(_column(columns, name, "--text-column", where), rows)]
        chosen = {"text_column": text_column}
    return LMDocuments(examples, ids or [str(i) for i in range(len(examples))], where, chosen)
