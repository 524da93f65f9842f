"""Case deletion: delete a method's top-k proponents (DEL+) or opponents (DEL-), retrain, measure.

``DEL(x', k) = mean over seeds [p_c(x'; seed s, retrained without them) - p_c(x'; seed s, trained on all)]``
with ``c`` the gold class of test point ``x'``. Each seed's deletion sets come from the
scores computed on *that seed's* full run (pass ``scores={seed: {method: matrix}}``); a
plain ``{method: matrix}`` applies one ranking to every seed, which measures transfer.
AUC-DEL is the mean over the k grid, reported as mean ± SE over test points (see
`tracinwe.evaluate.deletion_report`). Before anything else the retraining noise of the
recipe is measured (`tracinwe.evaluate.noise`). Retrains go through the shared
`RetrainRunner`: cached by what they delete, resumable, deduplicated.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.deletion_report import CONTROL, SIGNS, DeletionResult
from tracinwe.evaluate.noise import NOISE_THRESHOLD, measure_noise, random_deletion_set
from tracinwe.evaluate.retrain import EvalFn, Retrain, RetrainRunner, TrainFn
from tracinwe.io import write_json_atomic

FORMAT_VERSION = 2
DEFAULT_KS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)

__all__ = ["DEFAULT_KS", "deletion_order", "random_deletion_set", "plan_retrains", "run_case_deletion"]


def deletion_order(scores: np.ndarray, sign: str) -> np.ndarray:
    """Training indices per test point, most proponent first (``del+``) or most opponent first (``del-``)."""
    keyed = -scores if sign == "del+" else scores
    return np.argsort(keyed, axis=1, kind="stable")


def per_seed_scores(scores: Mapping, seeds: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """``{seed: {method: matrix}}`` from either that shape or one ``{method: matrix}`` for every seed."""
    if scores and all(isinstance(key, (int, np.integer)) for key in scores):
        missing = [s for s in seeds if s not in scores]
        if missing:
            raise TracInWEError(f"no scores for seeds {missing}: score every seed's own full run")
        return {int(s): dict(scores[s]) for s in seeds}
    return {int(s): dict(scores) for s in seeds}


def plan_retrains(
    scores: Mapping[int, Mapping[str, np.ndarray]], ks: Sequence[int], random_control: bool,
) -> dict[str, Retrain]:
    """Every retrain of the protocol by key: full runs and the control first, then point by point.

    Point-major order means a run stopped early (``time_limit_s``) leaves whole test points done.
    """
    seeds = list(scores)
    first = next(iter(scores[seeds[0]].values()))
    n_points, n_train = first.shape
    plan = {f"full__s{s}": Retrain.make(s) for s in seeds}
    if random_control:
        plan.update({f"{CONTROL}__k{k}__s{s}": Retrain.make(s, random_deletion_set(n_train, k, s)) for k in ks for s in seeds})
    orders = {(s, name, sign): deletion_order(matrix, sign)
              for s in seeds for name, matrix in scores[s].items() for sign in SIGNS}
    for t in range(n_points):
        for (s, name, sign), order in orders.items():
            for k in ks:
                plan[f"{name}__t{t}__{sign}__k{k}__s{s}"] = Retrain.make(s, order[t, :k])
    return plan


def run_case_deletion(
    train_fn: TrainFn,
    eval_fn: EvalFn,
    scores: Mapping,
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
    noise_threshold: float = NOISE_THRESHOLD,
    noise_repeats: int = 3,
) -> DeletionResult:
    """Run (or resume) the case-deletion protocol and return DEL curves and AUC-DEL per method.

    Args:
        train_fn: ``train_fn(train_indices, seed) -> model``; must be picklable when ``workers > 1``
            (e.g. a bound method of `SmallTask`), since retrains then run in spawned processes.
        eval_fn: ``eval_fn(model, test_indices) -> probabilities (n, C)``.
        scores: ``{seed: {method: (n_points, n_train)}}`` (each seed's own scores), or one
            ``{method: matrix}`` used for every seed; > 0 = proponent.
        test_indices: the test point of each score row, passed to ``eval_fn``.
        test_labels: the gold class of each test point (its probability is measured).
        ks: numbers of deleted examples; seeds: retraining seeds (each paired with its own full run).
        cache_dir: one JSON per retrain plus ``config.json`` and ``results.json``.
        workers: parallel processes (1 = in this process).
        config: the experiment's own settings (data, model recipe), saved beside the results;
            a cached retrain made under another config is recomputed.
        time_limit_s: stop starting retrains after this many seconds; the result then covers the
            test points whose retrains are all done (``result.settings["complete_points"]``); rerun to resume.
        noise_threshold / noise_repeats: the retraining-noise gate (random deletions of the largest k).
    """
    n_points = len(test_indices)
    if len(test_labels) != n_points:
        raise TracInWEError(f"{len(test_labels)} test labels for {n_points} test points: pass one label per point")
    by_seed = per_seed_scores(scores, seeds)
    shapes = {name: np.shape(m) for per in by_seed.values() for name, m in per.items()}
    if not shapes or len(set(shapes.values())) != 1 or next(iter(shapes.values()))[0] != n_points:
        raise TracInWEError(f"scores must all be (n_points={n_points}, n_train) matrices, got {shapes}")
    methods = list(by_seed[int(seeds[0])])
    n_train = next(iter(shapes.values()))[1]
    if not ks or max(ks) >= n_train or min(ks) < 1:
        raise TracInWEError(f"ks {list(ks)} must lie in 1..{n_train - 1}: scale the k grid to the training set")
    if CONTROL in methods:
        raise TracInWEError(f"{CONTROL!r} is reserved for the random control: rename that method")
    cache = Path(cache_dir)
    runner = RetrainRunner(train_fn, eval_fn, n_train, list(test_indices), cache, dict(config or {}), workers, threads_per_worker)
    settings = {
        "format_version": FORMAT_VERSION,
        "protocol": "case deletion (Yeh et al. 2022): p_gold(seed s retrained without top-k of seed s's scores) "
                    "- p_gold(seed s full run)",
        "ks": list(ks), "seeds": list(seeds), "methods": methods, "n_train": n_train,
        "scores_per_seed": all(isinstance(key, (int, np.integer)) for key in scores),
        "test_indices": [int(i) for i in test_indices], "test_labels": [int(y) for y in test_labels],
        "random_control": random_control, "workers": workers, "recipe_sha256": runner.recipe_digest,
        "experiment": dict(config or {}), "versions": _versions(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache / "config.json", settings)

    rows, gold = list(range(n_points)), [int(y) for y in test_labels]
    noise = measure_noise(runner, rows, gold, max(ks), seeds, noise_repeats, noise_threshold, progress=progress)
    if not noise.passed:
        print(f"WARNING: {noise.message()}", file=sys.stderr)
    settings["noise_gate"] = noise.to_json()
    plan = plan_retrains(by_seed, ks, random_control)
    done = runner.run(list(plan.values()), progress, time_limit_s)
    probabilities = {key: done[r] for key, r in plan.items() if r in done}
    incomplete = {int(key.split("__t")[1].split("__")[0]) for key in plan if key not in probabilities and "__t" in key}
    if any(key not in probabilities for key in plan if "__t" not in key):
        raise TracInWEError("time limit reached before the full runs and the control were done: rerun with the same cache_dir")
    complete = [t for t in range(n_points) if t not in incomplete]
    if not complete:
        raise TracInWEError("time limit reached before any test point was complete: rerun with the same cache_dir to resume")
    settings["complete_points"] = complete
    settings["retrains_missing"] = sum(key not in probabilities for key in plan)
    settings["retrains_distinct"] = len(set(plan.values()))
    result = DeletionResult.from_probabilities(probabilities, methods, list(ks), list(seeds), gold,
                                               [int(i) for i in test_indices], random_control, settings, points=complete)
    write_json_atomic(cache / "results.json", result.to_json())
    return result


def _versions() -> dict[str, str]:
    import torch

    from tracinwe import __version__

    return {"tracinwe": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
