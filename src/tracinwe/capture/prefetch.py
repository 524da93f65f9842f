"""Tokenisation off the critical path: the batches of a capture are made by a background thread, a few ahead.

Fast (Rust) tokenizers release the GIL, so the next batches are tokenised (and,
for an accelerator, copied into pinned memory) while the model runs the
current one. Where the model waits for a chunk, it is tokenised in growing
pieces (`tracinwe.capture.batching.token_windows`), so its batches may group
other texts than a chunk tokenised whole; each text's records are its own
whichever batch it ran in (equal to float rounding where padding differs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

from tracinwe.capture.batching import usable_cores

T = TypeVar("T")

#: Batches tokenised ahead of the model by `prefetched` (0: tokenise in the calling thread, as they are needed).
PREFETCH_BATCHES = 2

_DONE = object()


def can_overlap(device: torch.device) -> bool:
    """Whether a tokenising thread can run beside the model: an accelerator runs the model, or a CPU core is spare.

    On a CPU whose every core runs torch's threads, the thread only competes with them (measured: no gain).
    """
    if device.type != "cpu":
        return True
    return usable_cores() > torch.get_num_threads()


class _Failure:
    """An exception raised by the producer, handed to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int | None = None) -> Iterator[T]:
    """``items`` in order, produced by a background thread at most ``depth`` (default `PREFETCH_BATCHES`) ahead.

    An exception of the producer is raised here, at the item where it happened; closing
    this iterator early stops the producer after the item it is making.
    """
    depth = PREFETCH_BATCHES if depth is None else depth
    if depth < 1:
        yield from items
        return
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(item)
        except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
            slots.put(_Failure(error))
            return
        slots.put(_DONE)

    thread = threading.Thread(target=produce, name="tracinwe-tokenize", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # free a slot so that a blocked producer sees the stop
            try:
                slots.get(timeout=0.01)
            except queue.Empty:
                pass
        thread.join()
