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
    """One `TokenBlock` from the per-checkpoint records of the same examples.

    Every (example, token) key of any checkpoint gets one destination (a dense
    slot, or its place in the token-major postings); each checkpoint's rows
    are then copied there in a single scatter.
    """
    n, num_ckpt, dim = len(records[0]), len(records), records[0].dim
    keys_per_ckpt = []
    for rec in records:
        if len(rec) != n:
            raise ValueError("every checkpoint's records must hold the same examples")
        ex = rec.example_index.numpy().astype(np.int64)
        keys_per_ckpt.append((ex << _SHIFT) | rec.token_ids.numpy().astype(np.int64))
    keys = np.unique(np.concatenate(keys_per_ckpt)) if keys_per_ckpt else np.zeros(0, np.int64)
    example, token = keys >> _SHIFT, keys & _LOW
    dense_tokens = np.asarray(dense_tokens, dtype=np.int64)
    num_dense = dense_tokens.size
    slot = np.searchsorted(dense_tokens, token).clip(max=max(num_dense - 1, 0))
    is_dense = dense_tokens[slot] == token if num_dense else np.zeros(keys.size, bool)
    sparse = np.flatnonzero(~is_dense)
    order = sparse[np.argsort(token[sparse], kind="stable")]  # keys are sorted by example: stays ascending within a token
    # destination row of every key in the flat (nnz * C, d) postings or (n * C * T, d) dense buffer, checkpoint 0
    destination = np.empty(keys.size, dtype=np.int64)
    destination[order] = np.arange(order.size, dtype=np.int64) * num_ckpt
    dense_keys = np.flatnonzero(is_dense)
    destination[dense_keys] = example[dense_keys] * (num_ckpt * num_dense) + slot[dense_keys]
    rows = _zeros_float32((order.size * num_ckpt, dim))
    dense = _zeros_float32((n * num_ckpt * num_dense, dim))
    for c, (rec, k) in enumerate(zip(records, keys_per_ckpt)):
        at = np.searchsorted(keys, k)
        values = rec.rows.numpy()
        in_dense = is_dense[at]
        if in_dense.any():
            dense[destination[at[in_dense]] + c * num_dense] = values[in_dense]
            rows[destination[at[~in_dense]] + c] = values[~in_dense]
        else:
            rows[destination[at] + c] = values
    sorted_tokens = token[order]
    tokens, counts = np.unique(sorted_tokens, return_counts=True)
    offsets = np.zeros(tokens.size + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    return TokenBlock(n, dense.reshape(n, num_ckpt, num_dense, dim), tokens.astype(np.int32), offsets,
                      example[order].astype(np.int32), rows.reshape(order.size, num_ckpt, dim))


def _zeros_float32(shape: tuple[int, int]) -> np.ndarray:
    """A zeroed float32 array in small pages.

    numpy asks for transparent huge pages on large arrays; on the benchmark VMs
    their zeroing on first touch cost more than the layout itself (profiled on the
    TokenCNN of ``bench_index_build.py``). torch's allocator does not, and hands
    the memory over without a copy.
    """
    import torch

    return torch.zeros(shape, dtype=torch.float32).numpy()


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
