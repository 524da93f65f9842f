"""Batches of a capture grouped by token count: each window of texts is tokenised once, then cut into batches.

A window (a chunk of the capture) is tokenised in one call of the model's own
`TextClassifier.tokenize` (the fast tokenizer's batch call over many texts:
no per-batch overhead), its rows are sorted by their number of real tokens
(stably), and each batch takes its rows and only the columns some of them
use. Every row is exactly what `tokenize` gives that text, and a batch is
exactly what `tokenize` gives its texts (padded to the longest of them), so
the padding is that of sorting by token count, not by characters.

This needs to know how the model pads (the value of each padded cell), which
the contract does not say: it is used for the project's own adapters
(`HuggingFaceClassifier`, `TorchTextClassifier` with a HuggingFace tokenizer,
`CausalLanguageModel`). Any other model keeps texts grouped by character
length and tokenised batch by batch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from tracinwe.models.contract import Batch, TextClassifier, TorchTextClassifier

#: Parts a window is split into when it is tokenised while the model waits (threads; fast tokenizers release the GIL).
MAX_TOKENIZE_WORKERS = 2


def pad_values(classifier: TextClassifier) -> dict[str, int] | None:
    """The value of a padded cell for each batch key of the project's own adapters; None for any other model."""
    from tracinwe.models.causal_lm import LOSS_MASK, CausalLanguageModel
    from tracinwe.models.huggingface import HuggingFaceClassifier

    tokenize = type(classifier).tokenize
    tokenizer = getattr(classifier, "tokenizer", None)
    if tokenize is CausalLanguageModel.tokenize:
        return {"input_ids": int(tokenizer.pad_token_id), "attention_mask": 0, LOSS_MASK: 0}
    known = tokenize is HuggingFaceClassifier.tokenize or (
        tokenize is TorchTextClassifier.tokenize and getattr(classifier, "_tokenize", None) is None)
    if not known or tokenizer is None or tokenizer.pad_token_id is None:
        return None
    return {"input_ids": int(tokenizer.pad_token_id), "attention_mask": 0,
            "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0))}


def tokenize_window(classifier: TextClassifier, texts: Sequence, pairs: Sequence[str] | None, pads: dict[str, int],
                    workers: int = 1) -> Batch:
    """``classifier.tokenize`` of a whole window, in ``workers`` parts tokenised at once, joined (padded as the model pads)."""
    workers = max(1, min(workers, len(texts) // 64))
    if workers == 1:
        return classifier.tokenize(texts, pairs)
    # one short call first, here: the tokenizer's truncation/padding state is then what every part asks for, so no
    # thread changes it while another encodes (fast tokenizers refuse that: "Already borrowed")
    classifier.tokenize(texts[:1], None if pairs is None else pairs[:1])
    bounds = np.linspace(0, len(texts), workers + 1).astype(int)
    parts: list[Batch | BaseException | None] = [None] * workers

    def run(w: int) -> None:
        lo, hi = bounds[w], bounds[w + 1]
        try:
            parts[w] = classifier.tokenize(texts[lo:hi], None if pairs is None else pairs[lo:hi])
        except BaseException as error:  # noqa: BLE001 - re-raised below
            parts[w] = error

    threads = [threading.Thread(target=run, args=(w,), name="tracinwe-tokenize") for w in range(1, workers)]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    for part in parts:
        if isinstance(part, BaseException):
            raise part
    return _joined([p for p in parts if isinstance(p, dict)], pads)


def _joined(parts: list[Batch], pads: dict[str, int]) -> Batch:
    """Parts of one window stacked row-wise, each right- or left-aligned as it was padded."""
    width = max(p["input_ids"].shape[1] for p in parts)
    out = {}
    for key in parts[0]:
        blocks = []
        for p in parts:
            block = p[key]
            missing = width - block.shape[1]
            if missing:
                left = _left_padded(p["attention_mask"])
                fill = torch.full((block.shape[0], missing), pads.get(key, 0), dtype=block.dtype)
                block = torch.cat([fill, block] if left else [block, fill], dim=1)
            blocks.append(block)
        out[key] = torch.cat(blocks)
    return out


def _left_padded(mask: torch.Tensor) -> bool:
    return bool((mask[:, 0] == 0).any()) and bool((mask[:, -1] == 1).all())


def window_batches(window: Batch, batch_size: int, sort: bool) -> Iterator[tuple[np.ndarray, Batch]]:
    """``(rows of the window, batch)``: rows sorted stably by their number of real tokens (``sort``), cut into batches,
    each keeping only the columns its rows use."""
    mask = window["attention_mask"]
    lengths = mask.sum(dim=1).numpy()
    order = np.argsort(lengths, kind="stable") if sort else np.arange(lengths.size)
    used = mask.bool().numpy()
    for b in range(0, order.size, batch_size):
        rows = order[b : b + batch_size]
        cols = np.flatnonzero(used[rows].any(axis=0))
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 1)
        index = torch.from_numpy(rows)
        yield rows, {k: v[index, lo:hi].contiguous() for k, v in window.items()}


#: Threads that tokenise ahead of a model on an accelerator; None: one per core this process may use, at most
#: `MAX_ACCELERATOR_TOKENIZE_WORKERS` (`accelerator_tokenize_workers`). Each window is split into that many parts,
#: tokenised at once (fast tokenizers release the GIL while they encode). One thread is enough only where the
#: tokenizer spreads a call over the cores itself (Rust's thread pool, off under ``TOKENIZERS_PARALLELISM=false``
#: and in a process forked after it ran): on a 16-core H200 host 4 threads gave 0.80 against 0.81 with one
#: (`capture-h200-b256*.json`), while on another host, where one thread tokenised alone, tokenising took 69% of the
#: capture and the GPU idled (0.36, `capture-h200-b256-s20.json`).
ACCELERATOR_TOKENIZE_WORKERS: int | None = None
#: The most threads tokenising ahead of an accelerator by default.
MAX_ACCELERATOR_TOKENIZE_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def accelerator_tokenize_workers() -> int:
    """Threads tokenising ahead of a model on an accelerator: `ACCELERATOR_TOKENIZE_WORKERS`, or one per usable core
    (at most `MAX_ACCELERATOR_TOKENIZE_WORKERS`): the model's own thread mostly waits for the device."""
    if ACCELERATOR_TOKENIZE_WORKERS is not None:
        return max(1, ACCELERATOR_TOKENIZE_WORKERS)
    return max(1, min(MAX_ACCELERATOR_TOKENIZE_WORKERS, usable_cores()))


def background_workers(device: torch.device) -> int:
    """Threads that tokenise ahead of the model on ``device`` (one beside a CPU model, which needs the other cores)."""
    return 1 if device.type == "cpu" else accelerator_tokenize_workers()


#: The most batches tokenised in one call (and sorted by token count together): bounds the tokenizer's lists in memory.
MAX_WINDOW_BATCHES = 64


def token_windows(count: int, batch_size: int, lead: bool) -> list[np.ndarray]:
    """The pieces of a chunk tokenised at once, in input order, each at most `MAX_WINDOW_BATCHES` batches.

    ``lead`` (the model waits): one batch, then pieces of 1, 2, 4, ... batches, each tokenised while the model runs the
    ones before. Input order, not shortest first: where sorting by tokens changes nothing (texts truncated to the same
    length), the records need no reordering.
    """
    largest = MAX_WINDOW_BATCHES * batch_size
    windows, start, span = [], 0, batch_size if lead else largest
    while start < count:
        windows.append(np.arange(start, min(start + span, count)))
        start += span
        if len(windows) > 1:
            span = min(2 * span, largest)
    return windows


def token_sorted_batches(classifier: TextClassifier, texts: Sequence, pairs: Sequence[str] | None, pads: dict[str, int],
                         batch_size: int, sort: bool, lead: bool, workers: int,
                         lead_workers: int = MAX_TOKENIZE_WORKERS) -> Iterator[tuple[np.ndarray, Batch]]:
    """``(rows of texts, batch)`` of one window grouped by token count.

    The window is tokenised in pieces (`token_windows`; ``lead``: the model is waiting, so growing pieces, the first one
    batch, handed out alone); each piece is sorted by token count.
    """
    windows = token_windows(len(texts), batch_size, lead and sort)
    for w, window in enumerate(windows):
        part = [texts[i] for i in window] if len(windows) > 1 else texts
        part_pairs = None if pairs is None else ([pairs[i] for i in window] if len(windows) > 1 else pairs)
        first_of_several = w == 0 and len(windows) > 1  # the model waits for it: as many threads as help
        tokens = tokenize_window(classifier, part, part_pairs, pads, max(lead_workers, workers) if first_of_several else workers)
        for local, batch in window_batches(tokens, batch_size, sort):
            yield window[local], batch
