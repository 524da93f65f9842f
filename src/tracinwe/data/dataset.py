"""The in-memory labelled text dataset every other part of tracinwe consumes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError

__all__ = ["TextDataset", "normalize_whitespace"]


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def _stratified_take(labels: np.ndarray, n_take: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n_take`` row indices so each label keeps its share (largest remainder)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(classes))
    quotas = counts * (n_take / len(labels))
    per_class = np.floor(quotas).astype(int)
    short = n_take - int(per_class.sum())
    if short > 0:
        # Largest fractional parts first; ties go to the class seen first.
        order = np.lexsort((np.arange(len(classes)), -(quotas - per_class)))
        per_class[order[:short]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(per_class) if k > 0
    ]
    if not chosen:
        return np.zeros(0, dtype=int)
    return np.sort(np.concatenate(chosen))


@dataclass
class TextDataset:
    """Labelled texts (optionally sentence pairs) with stable string ids.

    ``labels[i]`` indexes ``label_names``. ``extra`` holds further per-row
    columns (e.g. the Twitter corpus' annotator ``confidence``); every list in
    it has one entry per row and is carried through ``subset``/``split``.
    """

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    text_pairs: list[str] | None = None
    ids: list[str] | None = None
    name: str = ""
    extra: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.labels = list(self.labels)
        self.label_names = list(self.label_names)
        if self.text_pairs is not None:
            self.text_pairs = list(self.text_pairs)
        if self.ids is None:
            self.ids = [str(i) for i in range(len(self.texts))]
        else:
            self.ids = [str(i) for i in self.ids]
        self.extra = {k: list(v) for k, v in self.extra.items()}

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes (``len(label_names)``)."""
        return len(self.label_names)

    def label_counts(self) -> dict[str, int]:
        """Rows per label name, in ``label_names`` order."""
        counts = np.bincount(np.asarray(self.labels, dtype=int), minlength=self.num_labels)
        return {n: int(c) for n, c in zip(self.label_names, counts)}

    def copy(self) -> TextDataset:
        """A copy whose lists can be mutated without touching this one."""
        return self.subset(range(len(self)))

    def subset(self, indices: Iterable[int], name: str | None = None) -> TextDataset:
        """The rows at ``indices`` (in that order), ids and extra columns kept."""
        idx = [int(i) for i in indices]
        assert self.ids is not None
        return TextDataset(
            texts=[self.texts[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            label_names=list(self.label_names),
            text_pairs=None if self.text_pairs is None else [self.text_pairs[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            name=self.name if name is None else name,
            extra={k: [v[i] for i in idx] for k, v in self.extra.items()},
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[TextDataset, TextDataset]:
        """Stratified (train, test) split; rows keep their original order and ids."""
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
        n_test = int(round(len(self) * test_fraction))
        if n_test == 0 or n_test == len(self):
            raise DataError(
                f"cannot split {len(self)} rows with test_fraction={test_fraction}: one side would be "
                "empty; use more rows or another fraction"
            )
        rng = np.random.default_rng(seed)
        test_idx = _stratified_take(np.asarray(self.labels), n_test, rng)
        mask = np.ones(len(self), dtype=bool)
        mask[test_idx] = False
        train_idx = np.flatnonzero(mask)
        base = self.name or "dataset"
        return self.subset(train_idx, f"{base}[train]"), self.subset(test_idx, f"{base}[test]")

    def sample(self, n: int, seed: int = 0) -> TextDataset:
        """A stratified random sample of ``n`` rows (all rows if ``n >= len``), original order."""
        if n < 0:
            raise DataError(f"sample size must be >= 0, got {n}")
        if n >= len(self):
            return self.copy()
        rng = np.random.default_rng(seed)
        return self.subset(_stratified_take(np.asarray(self.labels), n, rng))

    def dedupe(self) -> TextDataset:
        """Drop rows whose whitespace-normalised text (and pair) was seen before.

        The first occurrence wins, also when later copies carry another label,
        so duplicates can never be each other's top influence.
        """
        seen: set[tuple[str, str | None]] = set()
        keep: list[int] = []
        for i, text in enumerate(self.texts):
            pair = None if self.text_pairs is None else self.text_pairs[i]
            key = (
                normalize_whitespace(text) if isinstance(text, str) else repr(text),
                normalize_whitespace(pair) if isinstance(pair, str) else None,
            )
            if key not in seen:
                seen.add(key)
                keep.append(i)
        return self.subset(keep)

    def _row(self, i: int, rows: Sequence[str] | None = None) -> str:
        rid = self.ids[i] if self.ids is not None and i < len(self.ids) else str(i)
        if rows is not None and i < len(rows):  # where the row is in its file: "row 2 (line 3)"
            where = rows[i] + (f" (id {rid!r})" if rid != str(i) else "")
        else:
            where = f"row {i} (id {rid!r})"
        return f"{where} of {self.name!r}" if self.name else where

    def validate(self, rows: Sequence[str] | None = None) -> TextDataset:
        """Check the dataset is usable; raise ``DataError`` (one line) at the first problem.

        ``rows`` names each row in messages the way its file does (``"row 2 (line 3)"``);
        by default a row is named by its 0-based position and id. Returns ``self``.
        """
        what = f" in {self.name!r}" if self.name else ""
        if not self.label_names:
            raise DataError(f"no label names{what}; pass label_names (e.g. label_names=['neg', 'pos'])")
        if any(not isinstance(n, str) for n in self.label_names):
            raise DataError(f"label names must be strings{what}, got {self.label_names!r}")
        if len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"label names repeat{what}: {self.label_names!r}; make them unique")
        n = len(self.texts)
        columns: list[tuple[str, Sequence | None]] = [
            ("labels", self.labels), ("text_pairs", self.text_pairs), ("ids", self.ids),
        ]
        columns += [(f"extra[{k!r}]", v) for k, v in self.extra.items()]
        for col_name, col in columns:
            if col is not None and len(col) != n:
                raise DataError(
                    f"{col_name} has {len(col)} entries but texts has {n}{what}; "
                    "every column needs one entry per row"
                )
        assert self.ids is not None
        first_row: dict[str, int] = {}
        for i, rid in enumerate(self.ids):
            if rid in first_row:
                raise DataError(
                    f"{self._row(i, rows)}: id repeats "
                    f"{rows[first_row[rid]] if rows is not None else f'row {first_row[rid]}'}; ids must be unique"
                )
            first_row[rid] = i
        k = self.num_labels
        for i in range(n):
            text = self.texts[i]
            if not isinstance(text, str):
                raise DataError(
                    f"{self._row(i, rows)}: text is {type(text).__name__}, not a string; "
                    "fix or remove the row"
                )
            if not text.strip():
                raise DataError(
                    f"{self._row(i, rows)}: text is empty or whitespace-only; remove the row or fill in its text"
                )
            if self.text_pairs is not None:
                pair = self.text_pairs[i]
                if not isinstance(pair, str) or not pair.strip():
                    raise DataError(
                        f"{self._row(i, rows)}: second text (text pair) is empty or not a string; "
                        "remove the row or fill it in"
                    )
            label = self.labels[i]
            if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
                raise DataError(
                    f"{self._row(i, rows)}: label {label!r} is not an integer class index; "
                    f"labels must be 0..{k - 1} for {self.label_names}"
                )
            if not 0 <= int(label) < k:
                raise DataError(
                    f"{self._row(i, rows)}: label {int(label)} is out of range 0..{k - 1} "
                    f"for label names {self.label_names}; fix the label or the label names"
                )
        return self
