"""Fixing mistakes: proposals from opponents, masking the most negative shared word, and a planted fix on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tracinwe.evaluate.fix import (
    FixOutcome,
    fix_outcome,
    fixable_mistakes,
    most_negative_shared_tokens,
    summarize,
    top_opponents,
)

TRIGGER = "penguin"


def test_fixable_mistakes_window():
    probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.75, 0.25], [0.35, 0.65], [0.1, 0.9]])
    labels = [1, 1, 1, 0, 0]
    # row 0: wrong, p_gold 0.4 -> fixable; row 2: wrong but p_gold 0.25; row 3: wrong, 0.35; row 4: wrong, 0.1
    assert fixable_mistakes(probs, labels) == [0, 3]
    assert fixable_mistakes(probs, labels, low=0.0, high=1.0) == [0, 2, 3, 4]


def test_top_opponents_are_negative_and_most_negative_first():
    assert top_opponents(np.array([0.5, -2.0, -0.1, 3.0, -1.0]), 4) == [1, 4, 2]


def test_summary_rates_by_hand():
    outcomes = [FixOutcome(0, "a", 1, 0.4, 0.6, True, -0.01, 5), FixOutcome(1, "a", 0, 0.45, 0.3, False, 0.01, 5),
                FixOutcome(0, "b", 1, 0.4, 0.45, False, 0.0, 0)]
    a, b = summarize(outcomes)
    assert a["strategy"] == "a" and a["cases"] == 2 and a["fix_rate"] == 0.5
    assert a["fix_rate_se"] == pytest.approx(np.std([1, 0], ddof=1) / np.sqrt(2))
    assert a["accuracy_change"] == pytest.approx(0.0) and a["gold_probability_change"] == pytest.approx((0.2 - 0.15) / 2)
    assert b["fix_rate"] == 0.0 and b["cases"] == 1


def test_mcnemar_pairs_each_strategy_with_the_random_control_by_seed_and_case():
    from tracinwe.evaluate.fix_experiment import OTHER_SEED, RANDOM_CONTROL, with_mcnemar

    outcomes = []
    for seed in (0, 1):
        for case in range(4):  # the method fixes all 8 cases, the random control 1 (seed 0, case 0), the other seed none
            outcomes.append(FixOutcome(case, "m", 1, 0.4, 0.6, True, 0.0, 20, seed))
            outcomes.append(FixOutcome(case, RANDOM_CONTROL, 1, 0.4, 0.6, seed == 0 and case == 0, 0.0, 20, seed))
            outcomes.append(FixOutcome(case, OTHER_SEED, 1, 0.4, 0.45, False, 0.0, 0, seed))
    rows = {r["strategy"]: r for r in with_mcnemar(summarize(outcomes), outcomes)}
    assert rows["m"]["mcnemar_p_vs_random"] == pytest.approx(2 * 0.5 ** 7)  # 7 discordant pairs, all for m
    assert rows["m"]["mcnemar_p_vs_other_seed"] == pytest.approx(2 * 0.5 ** 8)
    assert rows[RANDOM_CONTROL]["mcnemar_p_vs_random"] == 1.0


def test_fix_outcome_and_result_by_hand():
    """A retrain is judged on the mistake's gold class and on every held-out row; the result has the shape of every
    evaluation result (JSON, Markdown, a terminal table)."""
    from tracinwe.evaluate.fix_experiment import FixResult, FixSetup
    from tracinwe.evaluate.result import EvaluationResult
    from tracinwe.evaluate.retrain import Retrain

    labels = [0, 1, 1, 0]
    before = np.array([[0.6, 0.4], [0.55, 0.45], [0.2, 0.8], [0.9, 0.1]])  # row 1 is the mistake; accuracy 3/4
    after = np.array([[0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.9, 0.1]])  # fixed, but row 0 breaks: accuracy 3/4
    edits = Retrain.make(7, removed=[3, 5], masked={9: [101]})
    outcome = fix_outcome(1, "s", edits, before, after, labels, seed=2)
    assert (outcome.test_index, outcome.gold, outcome.seed, outcome.edits) == (1, 1, 2, 3)
    assert outcome.gold_probability_before == 0.45 and outcome.gold_probability_after == 0.7 and outcome.fixed
    assert outcome.accuracy_change == 0.0
    assert not fix_outcome(1, "s", edits, before, before, labels).fixed
    result = FixResult(FixSetup(), {"2": {"heldout_accuracy": 0.75, "cases": [1]}}, 10, 4, ["a", "b"],
                       summarize([outcome]), [outcome], [])
    assert isinstance(result, EvaluationResult) and result.cases == [1] and result.heldout_accuracy == 0.75
    saved = json.loads(json.dumps(result.to_json()))
    assert saved["outcomes"] == [outcome.to_json()] and saved["summary"][0]["fix_rate"] == 1.0
    assert saved["setup"]["delete_count"] == 20
    assert result.markdown().splitlines()[2].startswith("| s | 1 | 100% ± ")
    assert result.rich_table().row_count == 1


@pytest.fixture(scope="module")
def triggered(tokenizer):
    """SMS spam where 16 ham texts carry a trigger word and the spam label; a ham test text with the trigger."""
    from tracinwe.data import load_dataset_source
    from tracinwe.tracin import TracInWE
    from tracinwe.training.small import SmallModelConfig, SmallTask, as_classifier, checkpoint_models

    data = load_dataset_source("bundled:sms-spam").sample(320, seed=0)
    texts, labels = list(data.texts), list(data.labels)
    ham = [i for i, y in enumerate(labels) if y == 0]
    for i in ham[:16]:
        texts[i], labels[i] = f"{texts[i]} {TRIGGER}", 1
    test_text = f"{texts[ham[16]]} {TRIGGER}"
    rows = [i for i in range(len(texts)) if i not in (ham[16], ham[17])]  # the training set of test_deletion's planted case
    train_texts, train_labels = [texts[i] for i in rows], [labels[i] for i in rows]
    config = SmallModelConfig(num_classes=2, dim=32, channels=32, epochs=8, batch_size=16, learning_rate=0.05, max_length=32,
                              device="cpu")
    task = SmallTask.from_texts(config, tokenizer, train_texts, train_labels, [test_text], [0])
    run = task.full_run(0)
    tw = TracInWE([(as_classifier(m, tokenizer, 32), lr) for m, lr in checkpoint_models(config, run)])
    return task, run, tw, train_texts, train_labels, test_text, [rows.index(i) for i in ham[:16]]


@pytest.mark.slow
def test_masked_token_is_the_most_negative_shared_non_special_word(triggered):
    _, _, tw, train_texts, train_labels, test_text, planted = triggered
    scores = tw.scores(train_texts, train_labels, [test_text], [0])[0]
    rows = top_opponents(scores, 5)
    mask = most_negative_shared_tokens(tw, train_texts, train_labels, rows, test_text, 0)
    specials = tw.final.special_token_ids
    for row, (token,) in mask.items():
        contributions = tw.word_contributions(train_texts[row], train_labels[row], test_text, 0)
        words = [w for w in contributions if w.token_id not in specials]
        worst = min(words, key=lambda w: w.contribution)
        assert token == worst.token_id and worst.contribution < 0


@pytest.mark.slow
def test_deleting_or_masking_the_trigger_fixes_the_planted_mistake(triggered, tmp_path):
    from tracinwe.evaluate.retrain import Retrain, RetrainRunner

    task, run, tw, train_texts, train_labels, test_text, planted = triggered
    before = task.evaluate(run.model, [0])[0]
    assert before.argmax() == 1  # the trigger makes the ham text look like spam: a mistake
    scores = tw.scores(train_texts, train_labels, [test_text], [0])[0]
    # The 16 planted examples are 5% of the training set; real spam sharing the text's words opposes it too,
    # yet the planted ones crowd the top opponents (chance: about 2 of them in the top 48).
    opponents = top_opponents(scores, 48)
    assert len(set(opponents) & set(planted)) >= 12
    # judged as the fix experiment judges it: retrained by the shared runner with the same seed, then `fix_outcome`
    mask = most_negative_shared_tokens(tw, train_texts, train_labels, opponents, test_text, 0)
    trigger_id = tw.final.tokenizer.convert_tokens_to_ids(TRIGGER)
    assert sum(mask.get(r) == [trigger_id] for r in planted) >= 4  # the trigger is what they share with the test text
    delete, masking = Retrain.make(0, opponents), Retrain.make(0, masked=mask)
    done = RetrainRunner(task.train, task.evaluate, len(train_texts), [0], tmp_path).run([delete, masking], progress=False)
    deleted = fix_outcome(0, "delete", delete, before[None], done[delete], [0])
    assert deleted.fixed and deleted.gold_probability_after > 0.5 and deleted.accuracy_change == 1.0
    masked = fix_outcome(0, "mask", masking, before[None], done[masking], [0])
    assert masked.gold_probability_after > before[0] and masked.edits == len(mask)


@pytest.mark.slow
def test_fix_command_end_to_end_on_real_data(tmp_path):
    """`tracinwe fix` on real SMS messages: mistakes in the window, proposals from opponents, outcomes consistent."""
    import json

    from typer.testing import CliRunner

    from tracinwe.cli.app import app

    out = tmp_path / "fix.json"
    result = CliRunner().invoke(app, [
        "fix", "--data", "bundled:sms-spam", "--n-train", "300", "--n-heldout", "300", "--max-cases", "2", "--low", "0.0",
        "--high", "0.7", "--delete-methods", "TracIn-WE,IF-last", "--mask-methods", "TracIn-WE", "--epochs", "2",
        "--delete-count", "20", "--mask-count", "40", "--seeds", "0,1", "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    strategies = [s["strategy"] for s in saved["summary"]]
    assert strategies == ["retrain (other seed)", "delete random rows (same seed)", "delete top-20 opponents: TracIn-WE",
                          "delete top-20 opponents: IF-last", "mask worst word in top-40 opponents: TracIn-WE"]
    assert 1 <= len(saved["cases"]) <= 4 and all(len(s["cases"]) <= 2 for s in saved["per_seed"].values())
    assert {o["seed"] for o in saved["outcomes"]} <= {0, 1}
    for o in saved["outcomes"]:
        assert 0.0 <= o["gold_probability_before"] < 0.5  # a mistake (2 classes), inside the [0, 0.7] window
        assert o["fixed"] == (o["gold_probability_after"] > 0.5)
    for p in saved["proposals"]:
        if p["strategy"].startswith("delete"):  # the top opponents and the same-seed random control
            assert len(p["delete"]) == 20 and len(set(p["delete"])) == 20 and not p["mask"]
        elif p["strategy"].startswith("mask"):
            assert 0 < len(p["mask"]) <= 40 and not p["delete"]
    for s in saved["summary"]:
        fixed = [o["fixed"] for o in saved["outcomes"] if o["strategy"] == s["strategy"]]
        assert s["fix_rate"] == pytest.approx(np.mean(fixed)) and s["cases"] == len(fixed)
        assert s["mcnemar_p_vs_random"] is not None and 0 <= s["mcnemar_p_vs_random"] <= 1
