"""A batch cache filled ahead of the model by a background thread, for every checkpoint of an in-memory capture.

The checkpoints of a capture that share a tokenizer share its batches. Where a core is
spare, one thread tokenises the chunks in order while the first checkpoint's pass runs;
a chunk's batches are handed out as they are made (the first chunk starts with a lead
batch, `tracinwe.capture.batching.token_sorted_batches`), and later passes read the
complete lists.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np

from tracinwe.models.contract import Batch

Chunk = tuple[int, int]


class TokenizedAhead(dict):
    """``key in cache`` is true for every chunk to come; ``cache.get(key)`` iterates its batches, waiting for each (and
    raises the thread's error where it happened)."""

    def __init__(self, chunks: list[Chunk], make: Callable[[int, Chunk], Iterator[tuple[np.ndarray, Batch]]]) -> None:
        super().__init__()
        self._lists: dict[Chunk, list] = {key: [] for key in chunks}
        self._done: set[Chunk] = set()
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()

        def fill() -> None:
            try:
                for i, key in enumerate(chunks):
                    for item in make(i, key):
                        if self._stop.is_set():
                            return
                        with self._changed:
                            self._lists[key].append(item)
                            self._changed.notify_all()
                    with self._changed:
                        self._done.add(key)
                        self._changed.notify_all()
            except BaseException as error:  # noqa: BLE001 - re-raised by the reader
                with self._changed:
                    self._error = error
                    self._changed.notify_all()

        self._thread = threading.Thread(target=fill, name="tracinwe-tokenize", daemon=True)
        self._thread.start()

    @property
    def chunks(self) -> list[Chunk]:
        """The chunks this cache tokenises, in order."""
        return list(self._lists)

    def __contains__(self, key) -> bool:
        return key in self._lists

    def get(self, key, default=None):
        if key not in self._lists:
            return default
        return self._read(key)

    def _read(self, key: Chunk) -> Iterator[tuple[np.ndarray, Batch]]:
        i = 0
        while True:
            with self._changed:
                items = self._lists[key]
                while i >= len(items) and key not in self._done and self._error is None:
                    self._changed.wait()
                if i >= len(items):
                    if key in self._done:
                        return
                    raise self._error  # type: ignore[misc]
                item = items[i]
            i += 1
            yield item

    def close(self, stop: bool = False) -> None:
        """Wait for the thread (it ends after the last chunk, at an error, or, with ``stop``, after the batch it is making)."""
        if stop:
            self._stop.set()
        self._thread.join()
