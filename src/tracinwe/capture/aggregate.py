"""Sum a batch's kept positions' gradient rows per (example, token): the records G(x)[w] of one batch.

Three ways to the same records:

* `aggregate_by_token` asks for the number of distinct (example, token) pairs
  (``unique``), so on an accelerator it waits for the batch's
  backward pass, then copies the records to the CPU and waits again;
  `in_input_order` then puts a chunk of such batches in input order;
* `deferred_aggregate` never asks: every size is the batch's ``B x T`` and the
  distinct keys are found by a sort, so the host runs ahead, queueing the next
  batches; `assemble_in_input_order` then puts a whole chunk of them in input
  order on the device and copies the records to the CPU once (the chunk's one
  wait), instead of the host concatenating and reordering them;
* `held_positions` keeps a batch's rows unsummed (on the CPU) and `sum_in_input_order`
  sums a whole chunk of them at once, straight into its records in input order:
  one sort of the chunk's keys and no copy of the summed rows to concatenate.

Each sums a key's rows in position order, so on the CPU they agree to the bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tracinwe.capture.records import TokenGradients


def aggregate_by_token(
    input_ids: torch.Tensor, grad: torch.Tensor, kept: torch.Tensor, vocab_size: int,
    labels: torch.Tensor, logits: torch.Tensor,
) -> TokenGradients:
    """Sum the kept positions' gradient rows per (example, token): G(x)[w], returned on the CPU: the batch's
    `held_positions` summed as a chunk of one (`sum_in_input_order`)."""
    held = held_positions(input_ids, grad, kept, vocab_size, labels, logits)
    return sum_in_input_order([(np.arange(input_ids.shape[0]), held)], vocab_size)


@dataclass
class DeferredRecords:
    """A batch's records still on the device, in fixed-size buffers (one entry per position of the batch): the first
    ``offsets[-1]`` entries of ``keys`` (example x vocabulary + token id) and ``rows`` are the records, the rest padding.
    `assemble_in_input_order` turns a chunk of them into `TokenGradients`."""

    offsets: torch.Tensor
    keys: torch.Tensor
    rows: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor
    vocab_size: int


def deferred_aggregate(
    input_ids: torch.Tensor, grad: torch.Tensor, kept: torch.Tensor, vocab_size: int,
    labels: torch.Tensor, logits: torch.Tensor,
) -> DeferredRecords:
    """`aggregate_by_token` without a wait: fixed-size work on the device, nothing copied yet."""
    n, t = input_ids.shape
    device = grad.device
    dropped = n * vocab_size  # above every real key: dropped positions sort last, past offsets[-1]
    example = torch.arange(n, device=device).repeat_interleave(t)
    keys = torch.where(kept.reshape(-1), example * vocab_size + input_ids.reshape(-1).long(), dropped)
    sorted_keys, order = torch.sort(keys, stable=True)
    starts = torch.ones_like(sorted_keys, dtype=torch.bool)
    starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
    slot = torch.cumsum(starts, 0) - 1  # each sorted position's distinct key
    inverse = torch.empty_like(slot)
    inverse[order] = slot
    rows = torch.zeros(n * t, grad.shape[-1], dtype=torch.float32, device=device)
    rows.index_add_(0, inverse, grad.reshape(n * t, -1).float())
    unique_keys = torch.full((n * t,), dropped, dtype=torch.long, device=device)
    unique_keys.scatter_(0, slot, sorted_keys)  # a key's positions all write it: no boolean mask, no wait
    offsets = torch.searchsorted(unique_keys, torch.arange(n + 1, device=device) * vocab_size)
    return DeferredRecords(offsets, unique_keys, rows, labels.long(), logits.float(), vocab_size)


def assemble_in_input_order(parts: list[tuple[np.ndarray, DeferredRecords]]) -> TokenGradients:
    """One chunk's records on the CPU, in input order, from its batches (``(local indices, deferred records)``): put in
    order on the device, then copied once (the one wait of the chunk)."""
    device = parts[0][1].rows.device
    order = torch.from_numpy(np.concatenate([local for local, _ in parts])).to(device)
    bases = np.concatenate([[0], np.cumsum([records.keys.numel() for _, records in parts])[:-1]]).tolist()
    starts = torch.cat([records.offsets[:-1] + base for (_, records), base in zip(parts, bases)])
    counts = torch.cat([records.offsets[1:] - records.offsets[:-1] for _, records in parts])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=device)
    counts, starts = counts[inverse], starts[inverse]
    offsets = torch.zeros(order.numel() + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(counts, 0)
    total = int(offsets[-1])
    entry = torch.repeat_interleave(starts - offsets[:-1], counts, output_size=total) + torch.arange(total, device=device)
    vocab_size = parts[0][1].vocab_size
    keys = torch.cat([records.keys for _, records in parts])[entry]
    rows = torch.cat([records.rows for _, records in parts])[entry]
    labels = torch.cat([records.labels for _, records in parts])[inverse]
    logits = torch.cat([records.logits for _, records in parts])[inverse]
    return TokenGradients(*(_on_host(t) for t in (offsets, keys % vocab_size, rows, labels, logits)))


def _on_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.cpu()``; from CUDA through pinned memory, then ordinary memory, so no pinned memory is kept (a one-off
    profile on an H200 host, not rerun by a script: 173 MB took 130 ms to ordinary memory, 3 ms to pinned memory; the
    capture benchmarks before and after, benchmarks/results/capture-h200-b256*.json, show the whole rework's effect)."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    staged = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    staged.copy_(tensor)
    out = torch.empty(tensor.shape, dtype=tensor.dtype)
    out.copy_(staged)
    return out


@dataclass
class HeldPositions:
    """A batch's gradient rows, not yet summed: row i belongs to the batch's example ``example[i]`` (-1: a dropped
    position) and token ``token[i]``."""

    example: torch.Tensor
    token: torch.Tensor
    rows: torch.Tensor
    labels: torch.Tensor
    logits: torch.Tensor


#: Kept share of a batch's positions below which `held_positions` keeps only the kept rows (a copy), as with Top-k.
GATHER_BELOW = 0.5


def held_positions(
    input_ids: torch.Tensor, grad: torch.Tensor, kept: torch.Tensor, vocab_size: int,
    labels: torch.Tensor, logits: torch.Tensor,
) -> HeldPositions:
    """A batch's rows for `sum_in_input_order`: every position (dropped ones marked), or, where few are kept, the kept
    ones alone."""
    n, t = input_ids.shape
    flat_kept = kept.reshape(-1)
    example = torch.arange(n, device=grad.device).repeat_interleave(t)
    token = input_ids.reshape(-1).long()
    rows = grad.reshape(n * t, -1).float()
    if int(flat_kept.sum()) < GATHER_BELOW * n * t:
        at = flat_kept.nonzero().squeeze(1)
        example, token, rows = example[at], token[at], rows[at]
    else:
        example = torch.where(flat_kept, example, -1)
    return HeldPositions(example, token, rows, labels.long(), logits.float())


def sum_in_input_order(parts: list[tuple[np.ndarray, HeldPositions]], vocab_size: int) -> TokenGradients:
    """One chunk's records in input order from its batches' held rows (``(local indices, held rows)``): one sort of the
    chunk's (example, token) keys, each batch's rows added straight into their records (returned on the CPU)."""
    n = sum(local.size for local, _ in parts)
    device = parts[0][1].rows.device
    dropped = n * vocab_size  # above every real key: sorts last
    keys = []
    for local, held in parts:
        example = torch.from_numpy(local).to(device)[held.example.clamp(min=0)]
        keys.append(torch.where(held.example >= 0, example * vocab_size + held.token, dropped))
    unique_keys, inverse = torch.unique(torch.cat(keys), sorted=True, return_inverse=True)
    rows = torch.zeros(unique_keys.numel(), parts[0][1].rows.shape[1], dtype=torch.float32, device=device)
    start = 0
    for (_, held), batch_keys in zip(parts, keys):
        rows.index_add_(0, inverse[start:start + batch_keys.numel()], held.rows)
        start += batch_keys.numel()
    if unique_keys.numel() and int(unique_keys[-1]) == dropped:
        unique_keys, rows = unique_keys[:-1], rows[:-1]
    offsets = torch.zeros(n + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(torch.bincount(unique_keys // vocab_size, minlength=n), 0)
    first = parts[0][1]
    labels = torch.empty(n, dtype=first.labels.dtype, device=device)
    logits = torch.empty(n, first.logits.shape[1], dtype=first.logits.dtype, device=device)
    for local, held in parts:
        where = torch.from_numpy(local).to(device)
        labels[where], logits[where] = held.labels, held.logits
    return TokenGradients(*(t.cpu() for t in (offsets, unique_keys % vocab_size, rows, labels, logits)))


def in_input_order(parts: list[tuple[np.ndarray, TokenGradients]]) -> TokenGradients:
    """One chunk's records, from its batches (``(local indices, records)``), in input order: each batch's entries written
    once to their place (no concatenation, then reordering, of the rows)."""
    order = np.concatenate([local for local, _ in parts])
    if np.array_equal(order, np.arange(order.size)):  # batches already in input order
        return parts[0][1] if len(parts) == 1 else TokenGradients.concat([r for _, r in parts])
    counts = torch.cat([r.offsets[1:] - r.offsets[:-1] for _, r in parts])  # per example, in batch order
    reordered = torch.empty_like(counts)
    reordered[torch.from_numpy(order)] = counts
    offsets = torch.zeros(order.size + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(reordered, 0)
    first = parts[0][1]
    token_ids = torch.empty(int(offsets[-1]), dtype=first.token_ids.dtype)
    rows = torch.empty(int(offsets[-1]), first.dim, dtype=first.rows.dtype)
    labels = torch.empty(order.size, dtype=first.labels.dtype)
    logits = torch.empty(order.size, first.logits.shape[1], dtype=first.logits.dtype)
    for local, records in parts:
        where = torch.from_numpy(local)
        sizes = records.offsets[1:] - records.offsets[:-1]
        shift = torch.repeat_interleave(offsets[:-1][where] - records.offsets[:-1], sizes)
        entries = shift + torch.arange(int(records.offsets[-1]))
        token_ids[entries] = records.token_ids
        rows.index_copy_(0, entries, records.rows)
        labels[where], logits[where] = records.labels, records.logits
    return TokenGradients(offsets, token_ids, rows, labels, logits)
