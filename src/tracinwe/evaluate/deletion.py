"""Case deletion: delete a method's top-k proponents (DEL+) or opponents (DEL-), retrain, measure.

``DEL(x', k) = mean over seeds [p_c(x'; retrained without them) - p_c(x'; trained on all)]``
with ``c`` the gold class of test point ``x'``; AUC-DEL is the mean over the k
grid, reported as mean +- standard error over test points (see
`tracinwe.evaluate.deletion_report`). Training and evaluation are injected
(``train_fn(train_indices, seed) -> model``, ``eval_fn(model, test_indices) ->
probabilities``); every retrain is paired with the full-data run of the same
seed; a random-deletion control shares one deletion set per (k, seed) across
test points. Each retrain's result is cached in its own JSON file, written
atomically, and skipped on the next run, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from collections.abc import Callable, Mapping, Sequence
import itertools
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.deletion_report import CONTROL, SIGNS, DeletionResult

TrainFn = Callable[[Sequence[int], int], object]
EvalFn = Callable[[object, Sequence[int]], np.ndarray]

FORMAT_VERSION = 1
DEFAULT_KS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


@dataclass(frozen=True)
class RetrainJob:
    """One retrain: train without ``deleted`` using ``seed``, then evaluate ``test_rows``."""

    key: str
    deleted: tuple[int, ...]
    seed: int
    test_rows: tuple[int, ...]

    @property
    def digest(self) -> str:
        """Identifies what was deleted and evaluated: a cached record with another digest is stale."""
        text = json.dumps([sorted(self.deleted), self.seed, list(self.test_rows)])
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def deletion_order(scores: np.ndarray, sign: str) -> np.ndarray:
    """Training indices per test point, most proponent first (``del+``) or most opponent first (``del-``)."""
    keyed = -scores if sign == "del+" else scores
    return np.argsort(keyed, axis=1, kind="stable")


def random_deletion_set(n_train: int, k: int, seed: int, control_seed: int = 12345) -> tuple[int, ...]:
    """The control's k random training indices for (k, seed), shared by all test points."""
    rng = np.random.default_rng([control_seed, k, seed])
    return tuple(int(i) for i in np.sort(rng.choice(n_train, size=k, replace=False)))


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", key) + ".json"


def plan_jobs(
    scores: Mapping[str, np.ndarray], n_points: int, ks: Sequence[int], seeds: Sequence[int], random_control: bool
) -> list[RetrainJob]:
    """Every retrain the protocol needs: full runs and the random control first, then point by point.

    Point-major order means a run stopped early (``time_limit_s``) leaves whole test points done.
    """
    all_points = tuple(range(n_points))
    jobs = [RetrainJob(f"full__s{s}", (), s, all_points) for s in seeds]
    n_train = next(iter(scores.values())).shape[1] if scores else 0
    if random_control:
        jobs.extend(RetrainJob(f"{CONTROL}__k{k}__s{s}", random_deletion_set(n_train, k, s), s, all_points)
                    for k in ks for s in seeds)
    orders = {(name, sign): deletion_order(matrix, sign) for name, matrix in scores.items() for sign in SIGNS}
    for t in range(n_points):
        for (name, sign), order in orders.items():
            for k in ks:
                deleted = tuple(int(i) for i in order[t, :k])
                jobs.extend(RetrainJob(f"{name}__t{t}__{sign}__k{k}__s{s}", deleted, s, (t,)) for s in seeds)
    return jobs


# -- workers ----------------------------------------------------------------------------------

_WORKER: dict[str, object] = {}


def _init_worker(train_fn: TrainFn, eval_fn: EvalFn, test_indices: Sequence[int], n_train: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER.update(train_fn=train_fn, eval_fn=eval_fn, test_indices=list(test_indices), n_train=n_train)


def _run_job(job: RetrainJob) -> tuple[RetrainJob, list[list[float]]]:
    """Train without the job's deletions and evaluate its test points (in a worker or in-process)."""
    deleted = set(job.deleted)
    keep = [i for i in range(int(_WORKER["n_train"])) if i not in deleted]  # type: ignore[arg-type]
    model = _WORKER["train_fn"](keep, job.seed)  # type: ignore[operator]
    test_indices = _WORKER["test_indices"]
    probs = np.asarray(_WORKER["eval_fn"](model, [test_indices[t] for t in job.test_rows]), dtype=np.float64)  # type: ignore[index, operator]
    return job, probs.tolist()


def write_json_atomic(path: Path, payload: object) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _cached(path: Path, job: RetrainJob, recipe: str) -> list[list[float]] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("digest") != job.digest or record.get("recipe") != recipe:
        return None
    return record["probabilities"]


def run_case_deletion(
    train_fn: TrainFn,
    eval_fn: EvalFn,
    scores: Mapping[str, np.ndarray],
    test_indices: Sequence[int],
    test_labels: Sequence[int],
    ks: Sequence[int] = DEFAULT_KS,
    seeds: Sequence[int] = (0, 1),
    cache_dir: str | Path = "deletion-cache",
    workers: int = 1,
    random_control: bool = True,
    config: Mapping[str, object] | None = None,
    progress: bool = True,
    threads_per_worker: int = 1,
    time_limit_s: float | None = None,
) -> DeletionResult:
    """Run (or resume) the case-deletion protocol and return DEL curves and AUC-DEL per method.

    Args:
        train_fn: ``train_fn(train_indices, seed) -> model``; must be picklable when ``workers > 1``
            (e.g. a bound method of `SmallTask`), since retrains then run in spawned processes.
        eval_fn: ``eval_fn(model, test_indices) -> probabilities (n, C)``.
        scores: method name -> (n_points, n_train) influence scores, > 0 = proponent.
        test_indices: the test point of each score row, passed to ``eval_fn``.
        test_labels: the gold class of each test point (its probability is measured).
        ks: numbers of deleted examples; seeds: retraining seeds (each paired with a full run).
        cache_dir: one JSON per retrain plus ``config.json`` and ``results.json``.
        workers: parallel processes (1 = in this process).
        config: the experiment's own settings (data, model recipe, versions), saved beside the results;
            a cached retrain made under another config is recomputed.
        time_limit_s: stop starting retrains after this many seconds; the result then covers the
            test points whose retrains are all done (``result.settings["complete_points"]``); rerun to resume.
    """
    import time
    from tqdm.auto import tqdm

    n_points = len(test_indices)
    if len(test_labels) != n_points:
        raise TracInWEError(f"{len(test_labels)} test labels for {n_points} test points: pass one label per point")
    shapes = {name: np.shape(m) for name, m in scores.items()}
    if not scores or len({s for s in shapes.values()}) != 1 or next(iter(shapes.values()))[0] != n_points:
        raise TracInWEError(f"scores must all be (n_points={n_points}, n_train) matrices, got {shapes}")
    n_train = next(iter(shapes.values()))[1]
    if not ks or max(ks) >= n_train or min(ks) < 1:
        raise TracInWEError(f"ks {list(ks)} must lie in 1..{n_train - 1}: scale the k grid to the training set")
    if CONTROL in scores:
        raise TracInWEError(f"{CONTROL!r} is reserved for the random control: rename that method")
    cache = Path(cache_dir)
    (cache / "retrains").mkdir(parents=True, exist_ok=True)
    recipe = hashlib.sha256(json.dumps(config or {}, sort_keys=True, default=str).encode()).hexdigest()[:16]
    settings = {
        "format_version": FORMAT_VERSION,
        "protocol": "case deletion (Yeh et al. 2022): p_gold(retrained without top-k) - p_gold(full run, same seed)",
        "ks": list(ks), "seeds": list(seeds), "methods": list(scores), "n_train": n_train,
        "test_indices": [int(i) for i in test_indices], "test_labels": [int(y) for y in test_labels],
        "random_control": random_control, "workers": workers, "recipe_sha256": recipe,
        "experiment": dict(config or {}), "versions": _versions(),
    }
    write_json_atomic(cache / "config.json", settings)

    jobs = plan_jobs(scores, n_points, ks, seeds, random_control)
    results: dict[str, list[list[float]]] = {}
    todo = []
    for job in jobs:
        hit = _cached(cache / "retrains" / _file_name(job.key), job, recipe)
        if hit is None:
            todo.append(job)
        else:
            results[job.key] = hit
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="retrains", unit="run", disable=not progress)

    def record(job: RetrainJob, probs: list[list[float]]) -> None:
        write_json_atomic(cache / "retrains" / _file_name(job.key),
                          {"key": job.key, "digest": job.digest, "recipe": recipe, "seed": job.seed,
                           "deleted": list(job.deleted), "test_rows": list(job.test_rows), "probabilities": probs})
        results[job.key] = probs
        bar.update(1)

    started = time.monotonic()

    def out_of_time() -> bool:
        return time_limit_s is not None and time.monotonic() - started > time_limit_s

    init_args = (train_fn, eval_fn, list(test_indices), n_train, threads_per_worker)
    if workers <= 1 or len(todo) <= 1:
        saved = dict(_WORKER)
        _WORKER.update(train_fn=train_fn, eval_fn=eval_fn, test_indices=list(test_indices), n_train=n_train)
        try:
            for job in todo:
                if out_of_time():
                    break
                record(*_run_job(job))
        finally:
            _WORKER.clear()
            _WORKER.update(saved)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=init_args) as pool:
            pending = iter(todo)
            running = {pool.submit(_run_job, job) for job in itertools.islice(pending, 2 * workers)}
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    record(*future.result())
                    if not out_of_time():
                        running |= {pool.submit(_run_job, job) for job in itertools.islice(pending, 1)}
    bar.close()

    incomplete = {t for job in jobs if job.key not in results for t in job.test_rows}
    complete = [t for t in range(n_points) if t not in incomplete]
    if not complete:
        raise TracInWEError("time limit reached before any test point was complete: rerun with the same cache_dir to resume")
    settings["complete_points"] = complete
    settings["retrains_missing"] = sum(job.key not in results for job in jobs)
    result = DeletionResult.from_probabilities(results, list(scores), list(ks), list(seeds), [int(y) for y in test_labels],
                                               [int(i) for i in test_indices], random_control, settings, points=complete)
    write_json_atomic(cache / "results.json", result.to_json())
    return result


def _versions() -> dict[str, str]:
    import torch

    from tracinwe import __version__

    return {"tracinwe": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
