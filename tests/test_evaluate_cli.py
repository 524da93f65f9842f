"""`tracinwe evaluate lds` on a user's own CSV: one-line errors, a ranked table with a recommendation, resume."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from tracinwe.cli.app import app
from tracinwe.evaluate.lds import LEARNED_MARGIN


@pytest.fixture(scope="module")
def user_csv(tmp_path_factory):
    from tracinwe.data import load_dataset_source

    data = load_dataset_source("bundled:sms-spam").dedupe().sample(400, seed=1)
    path = tmp_path_factory.mktemp("data") / "mine.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "verdict"])
        writer.writerows([t, data.label_names[y]] for t, y in zip(data.texts, data.labels))
    return path


def test_lds_names_a_missing_column_and_an_unknown_method(user_csv, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "lds", "--data", str(user_csv), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "text" in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["evaluate", "lds", "--data", str(user_csv), "--text-column", "review",
                                      "--label-column", "verdict", "--methods", "TracIn-WE,magic", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "magic" in result.output and "TracIn-WE" in result.output


@pytest.mark.slow
def test_lds_on_a_user_csv_ranks_methods_recommends_and_resumes(user_csv, tmp_path):
    out = tmp_path / "lds"
    args = ["evaluate", "lds", "--data", str(user_csv), "--text-column", "review", "--label-column", "verdict",
            "--n-train", "250", "--n-heldout", "100", "--test-points", "10", "--subsets", "8", "--epochs", "2",
            "--workers", "1", "--quick", "--out", str(out)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "retraining noise" in first.output
    saved = json.loads((out / "results.json").read_text())
    methods = [row["method"] for row in saved["summary"]]
    assert sorted(methods) == ["TF-IDF", "TracIn-WE", "TracIn-last", "random"]
    lds = [row["lds"] for row in saved["summary"]]
    assert lds == sorted(lds, reverse=True) and all(-1 <= v <= 1 for v in lds)
    assert saved["experiment"]["points_per_class"] == [5, 5]  # class-balanced: ham and spam
    info = saved["experiment"]
    learned = info["heldout_accuracy"] >= info["majority_class_rate"] + LEARNED_MARGIN
    expected = f"best: {methods[0]}" if info["noise_gate"]["passed"] and learned else "no recommendation"
    assert saved["recommendation"].startswith(expected)
    assert saved["recommendation"].split(":")[0] in first.output.replace("\n", " ")
    assert (out / "lds.png").stat().st_size > 1000
    retrains = sorted(p.name for p in (out / "retrains").iterdir())
    assert len(retrains) == 1 + 3 + 8  # full run, 3 noise draws, 8 subsets (one seed in --quick)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and sorted(p.name for p in (out / "retrains").iterdir()) == retrains
    assert json.loads((out / "results.json").read_text())["summary"] == saved["summary"]
