"""`TokenGradients`: the compact per-example record G(x)[w] for one checkpoint.

Example ``i`` owns entries ``offsets[i]:offsets[i+1]``; each entry is one token
type ``w`` of that example (sorted by id) with its summed gradient row
``G(x)[w] = sum over positions p with x_p = w of dloss/de_p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TokenGradients:
    """Sparse word-embedding gradients of a set of examples at one checkpoint."""

    offsets: torch.Tensor  # (n + 1,) int64
    token_ids: torch.Tensor  # (nnz,) int64
    rows: torch.Tensor  # (nnz, d) float32
    labels: torch.Tensor  # (n,) int64, the label whose loss was differentiated
    logits: torch.Tensor  # (n, C) float32

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def dim(self) -> int:
        return int(self.rows.shape[1])

    @property
    def example_index(self) -> torch.Tensor:
        """(nnz,) the example each entry belongs to."""
        counts = self.offsets[1:] - self.offsets[:-1]
        return torch.repeat_interleave(torch.arange(len(self), device=counts.device), counts)

    def example(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and gradient rows of example ``i``."""
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.token_ids[lo:hi], self.rows[lo:hi]

    def squared_norms(self) -> torch.Tensor:
        """(n,) the sparse gradient's squared norm per example: its self-influence at this checkpoint."""
        if self.rows.device.type == "cpu":  # float64 accumulation without a float64 copy of the rows
            rows = self.rows.numpy()
            per_entry = torch.from_numpy(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
        else:
            per_entry = (self.rows.double() ** 2).sum(dim=1)
        out = torch.zeros(len(self), dtype=torch.float64, device=self.rows.device)
        out.index_add_(0, self.example_index, per_entry)
        return out

    def select(self, indices: Sequence[int] | torch.Tensor) -> "TokenGradients":
        """The records of ``indices``, in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        starts, ends = self.offsets[:-1][idx], self.offsets[1:][idx]
        counts = ends - starts
        offsets = torch.zeros(idx.numel() + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        entry = torch.repeat_interleave(starts - offsets[:-1], counts) + torch.arange(int(offsets[-1]))
        return TokenGradients(offsets, self.token_ids[entry], self.rows[entry], self.labels[idx], self.logits[idx])

    def to(self, device: str | torch.device) -> "TokenGradients":
        return TokenGradients(*(t.to(device) for t in (self.offsets, self.token_ids, self.rows, self.labels, self.logits)))

    @staticmethod
    def concat(parts: Sequence["TokenGradients"]) -> "TokenGradients":
        """Records of several batches, one after the other."""
        if not parts:
            raise ValueError("nothing to concatenate")
        shifts = torch.cumsum(torch.tensor([0] + [int(p.offsets[-1]) for p in parts[:-1]]), 0)
        offsets = torch.cat([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return TokenGradients(
            offsets,
            torch.cat([p.token_ids for p in parts]),
            torch.cat([p.rows for p in parts]),
            torch.cat([p.labels for p in parts]),
            torch.cat([p.logits for p in parts]),
        )
