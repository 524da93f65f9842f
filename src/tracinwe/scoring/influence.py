"""Vectorised TracIn-WE scoring: only tokens shared by two examples interact.

For one checkpoint, ``S[i, j] = sum_{w in x_i and x_j} G(x_i)[w] . G(x_j)[w]``.
Both sides are grouped by token ("token-major"); tokens that link many pairs
(``[CLS]``, ``[SEP]``, frequent words) are scored as dense matrix products,
the long tail as one gathered, batched dot product. There is no Python loop
over pairs of examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tracinwe.capture.records import TokenGradients

SIGN_CONVENTION = (
    "score = sum_c lr_c * grad_E loss(train; c) . grad_E loss(test; c); "
    "positive = proponent (training on it lowers the test loss), negative = opponent"
)

#: Tokens linking at least this many (query, key) pairs are scored with a matmul.
DENSE_PAIR_THRESHOLD = 4096
#: Pairs per gathered chunk of the sparse tail (bounds memory: chunk x d floats).
PAIR_CHUNK = 1 << 16


@dataclass
class TokenMajor:
    """Entries of a TokenGradients regrouped by token id.

    ``tokens[t]`` owns ``starts[t]:starts[t] + counts[t]`` of ``examples``/``rows``.
    """

    tokens: torch.Tensor  # (U,) sorted unique token ids
    starts: torch.Tensor  # (U,)
    counts: torch.Tensor  # (U,)
    examples: torch.Tensor  # (nnz,) example of each entry
    rows: torch.Tensor  # (nnz, d)
    num_examples: int

    @classmethod
    def from_records(cls, records: TokenGradients) -> "TokenMajor":
        order = torch.argsort(records.token_ids, stable=True)
        tok = records.token_ids[order]
        tokens, counts = torch.unique_consecutive(tok, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        return cls(tokens, starts, counts, records.example_index[order], records.rows[order], len(records))


def _shared(a: TokenMajor, b: TokenMajor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions in ``a.tokens`` and ``b.tokens`` of the tokens both contain."""
    pos = torch.searchsorted(b.tokens, a.tokens).clamp(max=max(b.tokens.numel() - 1, 0))
    hit = b.tokens.numel() > 0
    found = (b.tokens[pos] == a.tokens) if hit else torch.zeros_like(a.tokens, dtype=torch.bool)
    return found.nonzero(as_tuple=True)[0], pos[found]


def influence_matrix(queries: TokenMajor, keys: TokenMajor, out: torch.Tensor | None = None, weight: float = 1.0) -> torch.Tensor:
    """``out[i, j] += weight * sum_w G(q_i)[w] . G(k_j)[w]`` over shared tokens (float64 out)."""
    if out is None:
        out = torch.zeros(queries.num_examples, keys.num_examples, dtype=torch.float64, device=queries.rows.device)
    qa, kb = _shared(queries, keys)
    if qa.numel() == 0:
        return out
    qc, kc = queries.counts[qa], keys.counts[kb]
    pairs = qc * kc
    dense = pairs >= DENSE_PAIR_THRESHOLD
    for t in dense.nonzero(as_tuple=True)[0].tolist():
        qs, ks = int(queries.starts[qa[t]]), int(keys.starts[kb[t]])
        q_sl, k_sl = slice(qs, qs + int(qc[t])), slice(ks, ks + int(kc[t]))
        block = (queries.rows[q_sl] @ keys.rows[k_sl].T).double()
        out[queries.examples[q_sl, None], keys.examples[None, k_sl]] += weight * block
    sparse = ~dense
    if sparse.any():
        _sparse_tail(queries, keys, qa[sparse], kb[sparse], out, weight)
    return out


def _sparse_tail(queries: TokenMajor, keys: TokenMajor, qa: torch.Tensor, kb: torch.Tensor, out: torch.Tensor,
                 weight: float) -> None:
    """Enumerate the (query entry, key entry) pairs of light tokens and dot them in chunks."""
    qc, kc = queries.counts[qa], keys.counts[kb]
    pairs = qc * kc
    total = int(pairs.sum())
    token_of_pair = torch.repeat_interleave(torch.arange(qa.numel(), device=qa.device), pairs)
    first_pair = torch.cumsum(pairs, 0) - pairs
    for lo in range(0, total, PAIR_CHUNK):
        hi = min(lo + PAIR_CHUNK, total)
        t = token_of_pair[lo:hi]
        local = torch.arange(lo, hi, device=qa.device) - first_pair[t]
        qi = queries.starts[qa][t] + local // kc[t]
        ki = keys.starts[kb][t] + local % kc[t]
        dots = (queries.rows[qi] * keys.rows[ki]).sum(dim=1).double()
        out.index_put_((queries.examples[qi], keys.examples[ki]), weight * dots, accumulate=True)


def tracin_matrix(
    queries: Sequence[TokenGradients], keys: Sequence[TokenGradients], learning_rates: Sequence[float]
) -> torch.Tensor:
    """``sum_c lr_c * influence_matrix(queries[c], keys[c])``: (n_queries, n_keys) float64."""
    if not (len(queries) == len(keys) == len(learning_rates)):
        raise ValueError("one record set per checkpoint is needed on both sides")
    out = None
    for q, k, lr in zip(queries, keys, learning_rates):
        out = influence_matrix(TokenMajor.from_records(q), TokenMajor.from_records(k), out, weight=float(lr))
    assert out is not None
    return out

