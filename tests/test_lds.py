"""LDS on a model whose leave-subset-out effects are known exactly; the noise gate; balanced points; statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracinwe import TracInWEError
from tracinwe.evaluate.lds import lds_per_point, random_subsets, run_lds
from tracinwe.evaluate.noise import measure_noise, random_deletion_set
from tracinwe.evaluate.points import balanced_points, saturated_count
from tracinwe.evaluate.retrain import Retrain, RetrainRunner
from tracinwe.evaluate.statistics import log_odds, mcnemar_p, paired_comparison, spearman

N_TRAIN, N_TEST = 40, 12


class AdditiveTask:
    """A "model" whose gold log-odds on test point t is exactly Σ_{i kept} A[t, i] + seed / 10.

    Leaving out a subset changes the output by the sum of the left-out effects, so the exact
    attribution of training example i on test point t is A[t, i]: its LDS is 1 by construction.
    """

    def __init__(self, effects: np.ndarray) -> None:
        self.effects = effects
        self.calls = 0

    def train(self, kept, seed):
        self.calls += 1
        return np.asarray(kept), seed

    def evaluate(self, model, rows):
        kept, seed = model
        z = self.effects[np.asarray(rows)][:, kept].sum(axis=1) + seed / 10
        p = 1 / (1 + np.exp(-z))
        return np.stack([1 - p, p], axis=1)  # gold class is 1 everywhere


@pytest.fixture()
def task():
    return AdditiveTask(np.random.default_rng(0).normal(0, 0.05, (N_TEST, N_TRAIN)))


def runner_for(task, tmp_path, **kw):
    return RetrainRunner(task.train, task.evaluate, N_TRAIN, list(range(N_TEST)), tmp_path, **kw)


def test_exact_attributions_score_one_and_random_scores_zero(task, tmp_path):
    rng = np.random.default_rng(1)
    scores = {s: {"exact": task.effects, "noisy": task.effects + rng.normal(0, 0.05, task.effects.shape),
                  "random": rng.standard_normal(task.effects.shape), "reversed": -task.effects} for s in (0, 1)}
    result = run_lds(runner_for(task, tmp_path), scores, list(range(N_TEST)), [1] * N_TEST, n_subsets=64, progress=False)
    assert result.lds["exact"] == pytest.approx(np.ones((2, N_TEST)), abs=1e-12)
    assert result.lds["reversed"] == pytest.approx(-np.ones((2, N_TEST)), abs=1e-12)
    mean_random = result.per_point("random").mean()
    assert abs(mean_random) < 0.12  # SE of one point's Spearman over 64 subsets is ~0.13; 12 points, 2 seeds
    assert 0.2 < result.per_point("noisy").mean() < 0.95
    rows = result.summary()
    assert [r["method"] for r in rows][:2] == ["exact", "noisy"] and rows[-1]["method"] == "reversed"
    assert rows[0]["paired"]["random"]["mean"] > 0.8 and rows[0]["paired"]["random"]["wilcoxon_p"] < 0.01
    assert result.recommendation().startswith("best: exact") and "trust it" in result.recommendation()
    result.settings["noise_gate"] = {"passed": False, "median_abs_delta": 0.13, "threshold": 0.02}
    assert result.recommendation().startswith("no recommendation: retraining alone moves p(gold) by 0.130")
    result.settings["noise_gate"]["passed"] = True
    assert result.recommendation().startswith("best: exact")
    result.settings.update(heldout_accuracy=0.578, majority_class_rate=0.580)  # a model that learned the prior only
    assert result.recommendation().startswith("no recommendation: held-out accuracy 0.578 is no better than always")
    result.settings["heldout_accuracy"] = 0.62
    assert result.recommendation().startswith("best: exact")
    assert task.calls == 2 * 64  # every subset once per seed, shared by all methods and points
    again = AdditiveTask(task.effects)
    resumed = run_lds(runner_for(again, tmp_path), scores, list(range(N_TEST)), [1] * N_TEST, n_subsets=64, progress=False)
    assert again.calls == 0 and np.array_equal(resumed.lds["noisy"], result.lds["noisy"])
    payload = json.loads(json.dumps(result.to_json()))
    assert np.shape(payload["per_seed_per_point"]["exact"]) == (2, N_TEST)
    from tracinwe.evaluate.result import EvaluationResult

    assert isinstance(result, EvaluationResult)  # the one result shape: JSON, Markdown, a terminal table
    assert len(result.markdown().splitlines()) == 2 + 4 and result.rich_table().row_count == 4


def test_lds_by_hand_on_three_subsets():
    scores = np.array([[1.0, 2.0, 3.0]])
    subsets = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], dtype=bool)  # predicted sums 3, 5, 4
    measured = np.array([[0.1], [0.3], [0.2]])
    assert lds_per_point(scores, subsets, measured) == pytest.approx([1.0])
    assert lds_per_point(scores, subsets, measured[[1, 0, 2]]) == pytest.approx([-1.0])  # ranks 3,1,2 vs 1,3,2
    assert lds_per_point(scores, subsets, measured[[1, 2, 0]]) == pytest.approx([-0.5])  # ranks 3,2,1: 1 - 6*6/(3*8)
    masks = random_subsets(10, 5, 0.5, seed=3)
    assert masks.shape == (5, 10) and (masks.sum(1) == 5).all()
    np.testing.assert_array_equal(masks, random_subsets(10, 5, 0.5, seed=3))
    with pytest.raises(TracInWEError, match="fraction"):
        random_subsets(10, 5, 1.5)


def test_noise_gate_passes_a_stable_recipe_and_flags_a_chaotic_one(task, tmp_path):
    stable = measure_noise(runner_for(task, tmp_path / "a"), range(N_TEST), [1] * N_TEST, k=2, seeds=(0, 1), progress=False)
    # The gate's value by hand: |Δp_gold| of 3 random 2-row deletions per seed against that seed's full run.
    deltas = []
    for s in (0, 1):
        for r in range(3):
            kept = [i for i in range(N_TRAIN) if i not in random_deletion_set(N_TRAIN, 2, s, 12345 + r)]
            full = task.evaluate(task.train(list(range(N_TRAIN)), s), range(N_TEST))[:, 1]
            deltas.append(np.abs(task.evaluate((np.asarray(kept), s), range(N_TEST))[:, 1] - full))
    assert stable.median_abs_delta == pytest.approx(float(np.median(np.concatenate(deltas))))
    assert stable.n_values == 2 * 3 * N_TEST and stable.passed == (stable.median_abs_delta <= 0.02)

    class Chaotic(AdditiveTask):
        def evaluate(self, model, rows):
            kept, seed = model
            p = np.random.default_rng([len(kept), seed, int(np.sum(kept))]).uniform(0, 1, len(rows))
            return np.stack([1 - p, p], axis=1)

    chaotic = measure_noise(runner_for(Chaotic(task.effects), tmp_path / "b"), range(N_TEST), [1] * N_TEST, 2, (0,),
                            progress=False)
    assert not chaotic.passed and "OVER THE GATE" in chaotic.message() and chaotic.to_json()["passed"] is False


def test_balanced_points_are_equal_per_class_and_seeded():
    labels = [0] * 50 + [1] * 30 + [2] * 8 + [3] * 100
    points = balanced_points(labels, 20, seed=0)  # 4 classes of 5
    assert np.bincount(np.asarray(labels)[points], minlength=4).tolist() == [5, 5, 5, 5]
    assert balanced_points(labels, 20, seed=0) == points and balanced_points(labels, 20, seed=1) != points
    ten = balanced_points(labels, 10, seed=0, min_per_class=5)  # the two largest classes: 3 and 0
    assert np.bincount(np.asarray(labels)[ten], minlength=4).tolist() == [5, 0, 0, 5]
    big = balanced_points(labels, 40, seed=0)  # 10 per class would need class 2 (8): three classes of 13
    assert np.bincount(np.asarray(labels)[big], minlength=4).tolist() == [13, 13, 0, 13]
    assert len(balanced_points([0, 1], 2)) == 2
    with pytest.raises(TracInWEError, match="fewer"):
        balanced_points([0, 0, 0], 5)
    assert saturated_count([0.5, 0.9995, 1.0, 0.999]) == 2


def test_paired_statistics_by_hand():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.0, 3.5, 2.0])
    c = paired_comparison(a, b)  # differences 0.5, 1.0, -0.5, 2.0
    d = np.array([0.5, 1.0, -0.5, 2.0])
    assert c.mean == pytest.approx(0.75) and c.se == pytest.approx(d.std(ddof=1) / 2)
    assert c.ci_low == pytest.approx(0.75 - 3.182446305284263 * c.se) and c.n == 4
    assert c.wilcoxon_p == pytest.approx(0.375)  # exact: ranks 1.5, 3, 1.5, 4 -> W- = 1.5 ... two-sided exact p
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1) and spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert mcnemar_p([1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]) == pytest.approx(2 * 0.5 ** 5)
    assert mcnemar_p([1, 0], [1, 0]) == 1.0
    lo = log_odds(np.array([[0.2, 0.8], [0.5, 0.5], [0.0, 1.0]]), [1, 0, 1])
    assert lo[:2] == pytest.approx([np.log(4), 0.0]) and np.isfinite(lo[2])


def test_runner_rejects_bad_retrains_and_shares_identical_ones(task, tmp_path):
    runner = runner_for(task, tmp_path)
    with pytest.raises(TracInWEError, match="outside"):
        runner.run([Retrain.make(0, [N_TRAIN + 3])], progress=False)
    same = [Retrain.make(0, [3, 1]), Retrain.make(0, [1, 3, 3])]
    assert same[0] == same[1]
    out = runner.run(same, progress=False)
    assert task.calls == 1 and len(out) == 1 and runner.trained == 1
