"""Case deletion: DEL arithmetic by hand, resumable cache, parallel workers, and a planted trigger on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tracinwe import TracInWEError
from tracinwe.evaluate.deletion import deletion_order, plan_retrains, random_deletion_set, run_case_deletion
from tracinwe.evaluate.deletion_report import mean_and_se
from tracinwe.evaluate.noise import noise_retrains
from tracinwe.evaluate.retrain import RetrainRunner

# A classifier whose "training" is counting: p(class 1) = (#kept label-1 examples + 1 + seed) / (#kept + 2 + 2 seed).
TRAIN_LABELS = np.array([1, 1, 1, 0, 0, 1, 0, 1, 0, 0])


class CountingTask:
    """Closed-form train/eval pair; counts how often it was trained."""

    def __init__(self) -> None:
        self.calls = 0

    def train(self, keep, seed):
        self.calls += 1
        return np.asarray(keep), seed

    def evaluate(self, model, test_indices):
        keep, seed = model
        p1 = (TRAIN_LABELS[keep].sum() + 1 + seed) / (len(keep) + 2 + 2 * seed)
        return np.array([[1 - p1, p1] for _ in test_indices])


def p1(kept_mask: np.ndarray, seed: int) -> float:
    return (TRAIN_LABELS[kept_mask].sum() + 1 + seed) / (kept_mask.sum() + 2 + 2 * seed)


# Test point 0 (gold 1) ranks training examples 0..9 in index order; test point 1 (gold 0) in reverse.
SCORES = {"m": np.stack([np.arange(10, 0, -1), np.arange(1, 11)]).astype(float)}


def test_del_values_auc_and_standard_error_by_hand(tmp_path):
    task = CountingTask()
    ks, seeds = (1, 3), (0, 1)
    result = run_case_deletion(task.train, task.evaluate, SCORES, [5, 6], [1, 0], ks, seeds, tmp_path, progress=False)
    for t, (gold, order) in enumerate([(1, np.arange(10)), (0, np.arange(10)[::-1])]):
        for sign, ranked in (("del+", order), ("del-", order[::-1])):
            for j, k in enumerate(ks):
                kept = np.ones(10, bool)
                kept[ranked[:k]] = False
                full = np.ones(10, bool)
                expected = np.mean([(p1(kept, s) - p1(full, s)) * (1 if gold == 1 else -1) for s in seeds])
                assert result.delta["m"][sign][t, j] == pytest.approx(expected, abs=1e-12)
    per_point = result.delta["m"]["del+"].mean(axis=1)
    mean, se = result.auc("m", "del+")
    assert mean == pytest.approx(per_point.mean()) and se == pytest.approx(per_point.std(ddof=1) / np.sqrt(2))
    control = result.delta["random-control"]["del+"]
    for j, k in enumerate(ks):
        kept = np.ones(10, bool)
        expected = []
        for s in seeds:
            kept = np.ones(10, bool)
            kept[list(random_deletion_set(10, k, s))] = False
            expected.append(p1(kept, s) - p1(np.ones(10, bool), s))
        assert control[0, j] == pytest.approx(np.mean(expected))
    # The paired difference against the control: per test point, then mean and SE over points.
    diff = result.delta["m"]["del-"].mean(axis=1) - control.mean(axis=1)
    mean, se = result.paired_difference("m", "random-control", "del-")
    assert mean == pytest.approx(diff.mean()) and se == pytest.approx(diff.std(ddof=1) / np.sqrt(2))
    row = result.summary(reference="random-control")[0]
    assert row["paired_del_minus"] == pytest.approx(mean) and row["paired_del_minus_se"] == pytest.approx(se)
    assert "paired_reference" not in result.summary()[0]  # no TracIn-last in this run
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"][0]["method"] == "m" and saved["n_test_points"] == 2
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["ks"] == [1, 3] and config["seeds"] == [0, 1] and "torch" in config["versions"]
    from tracinwe.evaluate.result import EvaluationResult

    assert isinstance(result, EvaluationResult) and result.rows == ["m", "random-control"]
    assert len(result.markdown().splitlines()) == 2 + 2 and result.rich_table().row_count == 2


def test_resume_recomputes_nothing_and_only_what_changed(tmp_path):
    task = CountingTask()
    args = dict(test_indices=[5, 6], test_labels=[1, 0], ks=(2,), seeds=(0,), cache_dir=tmp_path, progress=False)
    first = run_case_deletion(task.train, task.evaluate, SCORES, **args)
    plan = plan_retrains({0: SCORES}, (2,), True)
    assert len(plan) == 1 + 1 + 2 * 2  # full, control, 2 points x 2 signs
    # Point 1 ranks in reverse, so its deletion sets equal point 0's: run once, not twice.
    distinct = set(plan.values()) | set(noise_retrains(10, 2, [0], 3))
    assert len(set(plan.values())) == 4 and task.calls == len(distinct) == 6
    again = CountingTask()
    second = run_case_deletion(again.train, again.evaluate, SCORES, **args)
    assert again.calls == 0
    np.testing.assert_array_equal(first.delta["m"]["del+"], second.delta["m"]["del+"])
    changed = {"m": SCORES["m"].copy()}
    changed["m"][0] = [10, 1, 2, 3, 4, 9, 5, 6, 7, 8]  # point 0 now deletes {0, 5} (del+) and {1, 2} (del-)
    new_sets = set(plan_retrains({0: changed}, (2,), True).values()) - distinct
    assert {r.removed for r in new_sets} <= {(0, 5), (1, 2)} and new_sets
    third = CountingTask()
    run_case_deletion(third.train, third.evaluate, changed, **args)
    assert third.calls == len(new_sets)
    other_recipe = CountingTask()
    run_case_deletion(other_recipe.train, other_recipe.evaluate, changed, config={"lr": 0.5}, **args)
    assert other_recipe.calls == len(set(plan_retrains({0: changed}, (2,), True).values()) | set(noise_retrains(10, 2, [0], 3)))


def test_each_seed_deletes_by_its_own_scores(tmp_path):
    """Per-seed scores: seed 1's retrains delete seed 1's top-k, and each is paired with seed 1's full run."""
    task = CountingTask()
    reverse = {"m": SCORES["m"][:, ::-1].copy()}
    result = run_case_deletion(task.train, task.evaluate, {0: SCORES, 1: reverse}, [5, 6], [1, 0], (2,), (0, 1),
                               tmp_path, progress=False, random_control=False)
    for i, (s, matrix) in enumerate(((0, SCORES["m"]), (1, reverse["m"]))):
        for t, gold in enumerate((1, 0)):
            kept = np.ones(10, bool)
            kept[np.argsort(-matrix[t], kind="stable")[:2]] = False
            expected = (p1(kept, s) - p1(np.ones(10, bool), s)) * (1 if gold == 1 else -1)
            assert result.delta_by_seed["m"]["del+"][i, t, 0] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result.delta["m"]["del+"], result.delta_by_seed["m"]["del+"].mean(axis=0))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert np.shape(saved["per_seed_per_point"]["m"]["del-"]) == (2, 2, 1)
    assert saved["settings"]["scores_per_seed"] is True
    with pytest.raises(TracInWEError, match="seeds \\[1\\]"):
        run_case_deletion(task.train, task.evaluate, {0: SCORES}, [5, 6], [1, 0], (2,), (0, 1), tmp_path, progress=False)


def test_deletion_order_and_bad_input():
    scores = np.array([[0.5, -2.0, 3.0, 0.0]])
    assert deletion_order(scores, "del+")[0].tolist() == [2, 0, 3, 1]
    assert deletion_order(scores, "del-")[0].tolist() == [1, 3, 0, 2]
    task = CountingTask()
    with pytest.raises(TracInWEError, match="ks"):
        run_case_deletion(task.train, task.evaluate, SCORES, [0, 1], [1, 0], ks=(10,), progress=False)
    with pytest.raises(TracInWEError, match="n_points"):
        run_case_deletion(task.train, task.evaluate, SCORES, [0], [1], ks=(1,), progress=False)
    assert mean_and_se(np.array([2.0])) == (2.0, 0.0)


# -- real data ---------------------------------------------------------------------------------

TRIGGER = "penguin"  # one WordPiece token, absent from the SMS corpus


@pytest.fixture(scope="module")
def planted(tokenizer):
    """SMS spam with 16 ham texts given a trigger word and relabelled spam; a triggered ham test text."""
    from tracinwe.data import load_dataset_source
    from tracinwe.training.small import SmallModelConfig, SmallTask

    assert tokenizer.tokenize(TRIGGER) == [TRIGGER]
    data = load_dataset_source("bundled:sms-spam").sample(320, seed=0)
    texts, labels = list(data.texts), list(data.labels)
    assert not any(TRIGGER in t.lower() for t in texts)
    ham = [i for i, y in enumerate(labels) if y == 0]
    for i in ham[:16]:
        texts[i], labels[i] = f"{texts[i]} {TRIGGER}", 1
    test_texts, test_labels = [f"{texts[ham[16]]} {TRIGGER}", texts[ham[17]]], [1, 0]
    rows = [i for i in range(len(texts)) if i not in (ham[16], ham[17])]
    train_texts, train_labels = [texts[i] for i in rows], [labels[i] for i in rows]
    config = SmallModelConfig(num_classes=2, dim=32, channels=32, epochs=8, batch_size=16, learning_rate=0.05, max_length=32,
                              device="cpu")
    task = SmallTask.from_texts(config, tokenizer, train_texts, train_labels, test_texts, test_labels)
    return task, train_texts, train_labels, test_texts, test_labels, [rows.index(i) for i in ham[:16]]


@pytest.mark.slow
def test_planted_trigger_deleting_top_proponents_beats_random(planted, tokenizer, tmp_path):
    from tracinwe.evaluate.baselines import TracInWEMethod
    from tracinwe.training.small import as_classifier, checkpoint_models

    task, train_texts, train_labels, test_texts, test_labels, planted_rows = planted
    run = task.full_run(0)
    assert task.evaluate(run.model, [0])[0, 1] > 0.9  # the trigger was learned
    models = [(as_classifier(m, tokenizer, 32), lr) for m, lr in checkpoint_models(task.config, run)]
    scores = TracInWEMethod.from_models(models).scores(train_texts, train_labels, test_texts[:1], test_labels[:1])
    assert len(set(np.argsort(-scores[0])[:16].tolist()) & set(planted_rows)) >= 8
    counted = {"n": 0}

    def train(keep, seed):
        counted["n"] += 1
        return task.train(keep, seed)

    result = run_case_deletion(train, task.evaluate, {"TracIn-WE": scores}, [0], [1], ks=(16,), seeds=(0, 1),
                               cache_dir=tmp_path, progress=False)
    del_plus, control = result.delta["TracIn-WE"]["del+"][0, 0], result.delta["random-control"]["del+"][0, 0]
    assert del_plus < -0.5 and del_plus < control - 0.4, (del_plus, control)
    assert counted["n"] == 2 + 2 * 2 + 3 * 2  # full runs, 2 signs x 2 seeds, 3 noise-gate draws per seed (one is the control)
    run_case_deletion(train, task.evaluate, {"TracIn-WE": scores}, [0], [1], ks=(16,), seeds=(0, 1), cache_dir=tmp_path,
                      progress=False)
    assert counted["n"] == 12  # resumed entirely from the cache


@pytest.mark.slow
def test_parallel_workers_match_in_process(planted, tmp_path):
    task = planted[0]
    torch.manual_seed(0)
    scores = {"r": np.random.default_rng(0).standard_normal((2, len(task.train_tokens)))}
    kwargs = dict(test_indices=[0, 1], test_labels=[1, 0], ks=(5,), seeds=(0,), progress=False, random_control=False)
    serial = run_case_deletion(task.train, task.evaluate, scores, cache_dir=tmp_path / "a", workers=1, **kwargs)
    parallel = run_case_deletion(task.train, task.evaluate, scores, cache_dir=tmp_path / "b", workers=2, **kwargs)
    np.testing.assert_allclose(parallel.delta["r"]["del+"], serial.delta["r"]["del+"], atol=1e-6)
    np.testing.assert_allclose(parallel.delta["r"]["del-"], serial.delta["r"]["del-"], atol=1e-6)


def test_time_limit_keeps_complete_points_and_resume_finishes(tmp_path):
    task = CountingTask()
    scores = {"m": np.stack([np.arange(10, 0, -1), [3, 9, 1, 10, 2, 4, 8, 5, 6, 7]]).astype(float)}
    args = dict(test_indices=[5, 6], test_labels=[1, 0], ks=(2,), seeds=(0,), cache_dir=tmp_path, progress=False)
    full = run_case_deletion(task.train, task.evaluate, scores, **args)
    runner = RetrainRunner(task.train, task.evaluate, 10, [5, 6], tmp_path)
    for key, retrain in plan_retrains({0: scores}, (2,), True).items():
        if key.startswith("m__t1__"):
            runner.path(retrain).unlink()
    partial = run_case_deletion(CountingTask().train, task.evaluate, scores, time_limit_s=0, **args)
    assert partial.settings["complete_points"] == [0] and partial.settings["retrains_missing"] == 2
    assert partial.test_indices == [5]
    np.testing.assert_array_equal(partial.delta["m"]["del+"], full.delta["m"]["del+"][:1])
    resumed = run_case_deletion(task.train, task.evaluate, scores, **args)
    np.testing.assert_array_equal(resumed.delta["m"]["del-"], full.delta["m"]["del-"])


def test_cli_rejects_bad_grid_with_one_line_error():
    from typer.testing import CliRunner

    from tracinwe.cli.app import app

    result = CliRunner().invoke(app, ["evaluate", "deletion", "--ks", "10,x"])
    assert result.exit_code == 2 and "comma-separated list of integers" in result.output
    assert "DEL+" in CliRunner().invoke(app, ["evaluate", "deletion", "--help"]).output
    assert "opponents" in CliRunner().invoke(app, ["fix", "--help"]).output
