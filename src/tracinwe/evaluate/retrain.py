"""One resumable retrain runner, shared by case deletion, LDS, the noise gate and fixing mistakes.

A `Retrain` says which training rows to leave out (and which tokens to mask) under
which seed. The runner trains with the injected ``train_fn``, evaluates *every*
evaluation row with ``eval_fn``, and stores the result (an ``.npz``) in a file named by the
retrain's digest (what was removed, masked, the seed and the recipe), written
atomically. Two experiments that ask for the same retrain share one run, and
an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.io import save_npz_atomic

#: ``train_fn(kept_rows, seed) -> model``, or ``train_fn(kept_rows, seed, masked_tokens)`` for retrains that mask tokens
TrainFn = Callable[..., object]
#: ``eval_fn(model, eval_rows) -> class probabilities (n, C)``
EvalFn = Callable[[object, Sequence[int]], np.ndarray]


@dataclass(frozen=True)
class Retrain:
    """Train without ``removed`` (and with ``masked`` tokens padded out) under ``seed``."""

    seed: int
    removed: tuple[int, ...] = ()
    masked: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @classmethod
    def make(cls, seed: int, removed: Iterable[int] = (), masked: Mapping[int, Sequence[int]] | None = None) -> "Retrain":
        """A canonical retrain: sorted rows, sorted masked tokens."""
        masked_rows = tuple(sorted((int(r), tuple(sorted(int(t) for t in toks))) for r, toks in (masked or {}).items()))
        return cls(int(seed), tuple(sorted(int(i) for i in set(removed))), masked_rows)

    def digest(self, recipe: str) -> str:
        text = json.dumps([self.seed, list(self.removed), [list(m[1]) + [m[0]] for m in self.masked], recipe])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def is_full(self) -> bool:
        return not self.removed and not self.masked


@dataclass
class RetrainRunner:
    """Runs retrains (in processes when ``workers > 1``), caching each under ``cache_dir/retrains``.

    ``recipe`` describes everything that fixes a retrain's outcome besides the `Retrain` itself
    (data, model, training recipe, evaluation rows): a cached result made under another recipe is
    never reused. ``train_fn``/``eval_fn`` must be picklable for ``workers > 1``.
    """

    train_fn: TrainFn
    eval_fn: EvalFn
    n_train: int
    eval_rows: Sequence[int]
    cache_dir: str | Path
    recipe: Mapping[str, object] = field(default_factory=dict)
    workers: int = 1
    threads_per_worker: int = 1
    trained: int = 0  # retrains actually run by this runner (not read from the cache)

    def __post_init__(self) -> None:
        self.folder = Path(self.cache_dir) / "retrains"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recipe_digest = hashlib.sha256(json.dumps(dict(self.recipe), sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.eval_rows = [int(i) for i in self.eval_rows]

    def path(self, retrain: Retrain) -> Path:
        return self.folder / f"{retrain.digest(self.recipe_digest)}.npz"

    def cached(self, retrain: Retrain) -> np.ndarray | None:
        """The stored probabilities of a retrain, or None when it has not run (or the file is damaged)."""
        try:
            with np.load(self.path(retrain)) as record:
                return np.asarray(record["probabilities"], dtype=np.float64)
        except (OSError, ValueError, KeyError, EOFError):
            return None

    def run(self, retrains: Sequence[Retrain], progress: bool = True, time_limit_s: float | None = None,
            desc: str = "retrains") -> dict[Retrain, np.ndarray]:
        """Probabilities (n_eval, C) of every retrain that is done; missing ones only if time ran out."""
        from tqdm.auto import tqdm

        for r in retrains:
            bad = [i for i in r.removed if not 0 <= i < self.n_train]
            if bad:
                raise TracInWEError(f"retrain removes rows {bad[:5]} outside 0..{self.n_train - 1}")
            if len(r.removed) >= self.n_train:
                raise TracInWEError("a retrain removes every training example: delete fewer")
        unique = list(dict.fromkeys(retrains))
        done: dict[Retrain, np.ndarray] = {}
        todo = []
        for r in unique:
            hit = self.cached(r)
            if hit is None:
                todo.append(r)
            else:
                done[r] = hit
        bar = tqdm(total=len(unique), initial=len(unique) - len(todo), desc=desc, unit="run", disable=not progress)
        started = time.monotonic()

        def out_of_time() -> bool:
            return time_limit_s is not None and time.monotonic() - started > time_limit_s

        def record(r: Retrain, probs: np.ndarray) -> None:
            meta = json.dumps({"seed": r.seed, "removed": list(r.removed), "recipe": self.recipe_digest,
                               "masked": {str(row): list(t) for row, t in r.masked}})
            save_npz_atomic(self.path(r), probabilities=probs, meta=np.array(meta))
            done[r] = probs
            self.trained += 1
            bar.update(1)

        if self.workers <= 1 or len(todo) <= 1:
            import torch

            # The same thread count as a worker, so a result does not depend on where its retrain ran.
            threads = torch.get_num_threads()
            torch.set_num_threads(self.threads_per_worker)
            try:
                for r in todo:
                    if out_of_time():
                        break
                    record(r, _retrain(self.train_fn, self.eval_fn, self.n_train, self.eval_rows, r))
            finally:
                torch.set_num_threads(threads)
        else:
            init = (self.train_fn, self.eval_fn, self.n_train, self.eval_rows, self.threads_per_worker)
            with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_WorkerState.init,
                                     initargs=init) as pool:
                pending = iter(todo)
                running = {pool.submit(_WorkerState.run, r): r for r in itertools.islice(pending, 2 * self.workers)}
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        r = running.pop(future)
                        record(r, future.result())
                        if not out_of_time():
                            running.update({pool.submit(_WorkerState.run, nxt): nxt for nxt in itertools.islice(pending, 1)})
        bar.close()
        return done


def _retrain(train_fn: TrainFn, eval_fn: EvalFn, n_train: int, eval_rows: Sequence[int], r: Retrain) -> np.ndarray:
    removed = set(r.removed)
    kept = [i for i in range(n_train) if i not in removed]
    masked = {row: list(t) for row, t in r.masked}
    model = train_fn(kept, r.seed, masked) if masked else train_fn(kept, r.seed)  # type: ignore[call-arg]
    return np.asarray(eval_fn(model, list(eval_rows)), dtype=np.float64)


class _WorkerState:
    """What a worker process holds between retrains (set once by its initializer)."""

    args: tuple = ()

    @classmethod
    def init(cls, train_fn: TrainFn, eval_fn: EvalFn, n_train: int, eval_rows: Sequence[int], threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        cls.args = (train_fn, eval_fn, n_train, list(eval_rows))

    @classmethod
    def run(cls, r: Retrain) -> np.ndarray:
        return _retrain(*cls.args, r)
