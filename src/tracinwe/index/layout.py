"""Pure array math of the index layout: per-checkpoint records -> one token-major block.

A segment stores, for a run of examples, every checkpoint side by side:

* ``dense``  (n, C, T, d): the rows of the T *dense tokens* (present in nearly
  every example, e.g. ``[CLS]``/``[SEP]``), zeros where an example lacks one;
  scored for all examples at once with one matrix product.
* token-major postings of every other token: ``tokens`` (U,) sorted ids,
  ``offsets`` (U+1,), ``postings`` (nnz,) the local example of each entry
  (ascending within a token) and ``rows`` (nnz, C, d).

A token kept at one checkpoint and dropped at another (Top-k) has a zero row at
the checkpoint where it was dropped, which contributes exactly zero. The
learning rates go on the query side, so a stored row never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tracinwe.capture.records import TokenGradients

_SHIFT = np.int64(32)
_LOW = np.int64((1 << 32) - 1)


@dataclass
class TokenBlock:
    """Records of all checkpoints of a run of examples, in the index layout (float32)."""

    num_examples: int
    dense: np.ndarray  # (n, C, T, d)
    tokens: np.ndarray  # (U,) int32 sorted
    offsets: np.ndarray  # (U + 1,) int64
    postings: np.ndarray  # (nnz,) int32 local example
    rows: np.ndarray  # (nnz, C, d)

    def token_slice(self, u: int) -> slice:
        return slice(int(self.offsets[u]), int(self.offsets[u + 1]))


def combine_checkpoints(records: Sequence[TokenGradients], dense_tokens: np.ndarray) -> TokenBlock:
    """One `TokenBlock` from the per-checkpoint records of the same examples."""
    n, num_ckpt, dim = len(records[0]), len(records), records[0].dim
    keys_per_ckpt = []
    for rec in records:
        if len(rec) != n:
            raise ValueError("every checkpoint's records must hold the same examples")
        ex = rec.example_index.numpy().astype(np.int64)
        keys_per_ckpt.append((ex << _SHIFT) | rec.token_ids.numpy().astype(np.int64))
    keys = np.unique(np.concatenate(keys_per_ckpt)) if keys_per_ckpt else np.zeros(0, np.int64)
    rows = np.zeros((keys.size, num_ckpt, dim), dtype=np.float32)
    for c, (rec, k) in enumerate(zip(records, keys_per_ckpt)):
        rows[np.searchsorted(keys, k), c] = rec.rows.numpy()
    example, token = keys >> _SHIFT, keys & _LOW
    dense_tokens = np.asarray(dense_tokens, dtype=np.int64)
    is_dense = np.isin(token, dense_tokens)
    dense = np.zeros((n, num_ckpt, dense_tokens.size, dim), dtype=np.float32)
    dense[example[is_dense], :, np.searchsorted(dense_tokens, token[is_dense])] = rows[is_dense]
    sparse = ~is_dense
    token, example, rows = token[sparse], example[sparse], rows[sparse]
    order = np.argsort(token, kind="stable")  # keys were sorted by example: stays ascending within a token
    token, example, rows = token[order], example[order], rows[order]
    tokens, counts = np.unique(token, return_counts=True)
    offsets = np.zeros(tokens.size + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return TokenBlock(n, dense, tokens.astype(np.int32), offsets, example.astype(np.int32), rows)


def weighted_query(block: TokenBlock, learning_rates: Sequence[float]) -> TokenBlock:
    """The query side: each checkpoint's rows scaled by its learning rate."""
    lr = np.asarray(learning_rates, dtype=np.float32)
    return TokenBlock(
        block.num_examples,
        block.dense * lr[None, :, None, None],
        block.tokens,
        block.offsets,
        block.postings,
        block.rows * lr[None, :, None],
    )


def choose_dense_tokens(token_lists: Sequence[Sequence[int]], fraction: float = 0.9) -> np.ndarray:
    """Token ids present in at least ``fraction`` of the (tokenised) examples, sorted."""
    if not token_lists:
        return np.zeros(0, dtype=np.int64)
    counts: dict[int, int] = {}
    for ids in token_lists:
        for t in set(int(i) for i in ids):
            counts[t] = counts.get(t, 0) + 1
    need = fraction * len(token_lists)
    return np.array(sorted(t for t, c in counts.items() if c >= need), dtype=np.int64)


def projection_matrix(in_dim: int, out_dim: int, seed: int, salt: int) -> np.ndarray:
    """Seeded Gaussian (in_dim, out_dim) with entries N(0, 1/out_dim): E[(xR)(yR)] = x.y."""
    rng = np.random.default_rng([seed, salt, in_dim, out_dim])
    return (rng.standard_normal((in_dim, out_dim)) / np.sqrt(out_dim)).astype(np.float32)


def self_influence(records: Sequence[TokenGradients], learning_rates: Sequence[float]) -> np.ndarray:
    """``sum_c lr_c ||G_c(x)||^2`` per example from full-precision records (float64)."""
    out = np.zeros(len(records[0]), dtype=np.float64)
    for rec, lr in zip(records, learning_rates):
        out += float(lr) * rec.squared_norms().numpy()
    return out


def float16_scale(*arrays: np.ndarray) -> float:
    """Power of two ``s`` with ``max |x| / s`` in (128, 256]: float16 keeps full precision, no overflow."""
    peak = max((float(np.abs(a).max()) for a in arrays if a.size), default=0.0)
    if not np.isfinite(peak):
        raise ValueError("gradients contain inf or NaN: check the model and the inputs")
    return float(2.0 ** (np.ceil(np.log2(peak)) - 8)) if peak > 0 else 1.0
