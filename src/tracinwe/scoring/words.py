"""Word-level decomposition: which shared tokens carry an influence score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from tracinwe.capture.records import TokenGradients


@dataclass
class WordContribution:
    """One shared token's share of a (train, test) score. Unpacks as ``(token, contribution)``."""

    token: str
    contribution: float
    token_id: int
    train_positions: tuple[int, ...] = field(default=())
    test_positions: tuple[int, ...] = field(default=())

    def __iter__(self):
        return iter((self.token, self.contribution))

    def to_json(self) -> dict:
        return {
            "token": self.token,
            "contribution": self.contribution,
            "token_id": self.token_id,
            "train_positions": list(self.train_positions),
            "test_positions": list(self.test_positions),
        }


def token_contributions(
    train: Sequence[TokenGradients], test: Sequence[TokenGradients], learning_rates: Sequence[float],
    train_index: int = 0, test_index: int = 0,
) -> dict[int, float]:
    """``{token_id: sum_c lr_c G_c(train)[w] . G_c(test)[w]}`` over tokens shared at any checkpoint."""
    totals: dict[int, float] = {}
    for tr, te, lr in zip(train, test, learning_rates):
        a_ids, a_rows = tr.example(train_index)
        b_ids, b_rows = te.example(test_index)
        common, ia, ib = _intersect(a_ids, b_ids)
        dots = (a_rows[ia].double() * b_rows[ib].double()).sum(dim=1) * float(lr)
        for tok, value in zip(common.tolist(), dots.tolist()):
            totals[tok] = totals.get(tok, 0.0) + value
    return totals


def _intersect(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Common values of two sorted unique id vectors and their positions in each."""
    if a.numel() == 0 or b.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    pos = torch.searchsorted(b, a).clamp(max=b.numel() - 1)
    found = b[pos] == a
    return a[found], found.nonzero(as_tuple=True)[0], pos[found]


def word_contributions(
    contributions: dict[int, float],
    token_strings: Sequence[str],
    train_ids: Sequence[int],
    test_ids: Sequence[int],
) -> list[WordContribution]:
    """Turn token totals into `WordContribution`s with positions, largest magnitude first.

    ``token_strings`` aligns with ``sorted(contributions)``; ``train_ids``/``test_ids``
    are the tokenised inputs (positions refer to them).
    """
    out = []
    for tok, text in zip(sorted(contributions), token_strings):
        out.append(
            WordContribution(
                token=text,
                contribution=contributions[tok],
                token_id=tok,
                train_positions=tuple(i for i, t in enumerate(train_ids) if t == tok),
                test_positions=tuple(i for i, t in enumerate(test_ids) if t == tok),
            )
        )
    out.sort(key=lambda w: -abs(w.contribution))
    return out
