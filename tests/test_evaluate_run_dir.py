"""`tracinwe evaluate lds --run-dir`: LDS of the user's own `tracinwe train` run, retrained with its own recipe."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_base_model, write_reviews
from tracinwe.cli.app import app
from tracinwe.evaluate.experiment import ExperimentSetup
from tracinwe.evaluate.run_task import prepare_run_experiment
from tracinwe.training import TrainConfig, train_classifier

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tokenizer):
    from tracinwe.data import load_dataset_source

    root = tmp_path_factory.mktemp("lds-run")
    data = load_dataset_source("bundled:rotten-tomatoes").sample(160, seed=3)
    csv_path = write_reviews(root / "reviews.csv", data.texts, data.labels, data.label_names)
    base = tiny_base_model(root / "base", tokenizer, seed=1)
    result = invoke("train", "--data", csv_path, "--text-column", "review", "--label-column", "sentiment", "--model", base,
                    "--out", root / "run", "--epochs", 2, "--lr", 0.05, "--optimizer", "sgd", "--checkpoints", 2,
                    "--max-length", 32, "--holdout", 0.25, "--seed", 4, "--json")
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout)


def test_retraining_every_row_with_the_runs_seed_reproduces_the_run(run):
    root, summary = run
    prepared = prepare_run_experiment(ExperimentSetup(n_test_points=10, n_heldout=40, ks=(1,)), root / "run")
    assert prepared.setup.seeds == (4,) and prepared.setup.n_train == summary["n_train"] == 120
    assert len(prepared.heldout_texts) == 40 and not set(prepared.heldout_texts) & set(prepared.train_texts)
    assert np.bincount(prepared.point_labels).tolist() == [5, 5]
    task = prepared.task
    recorded = task.evaluate(task.full_run(4).model, prepared.points)
    again = task.evaluate(task.train(range(120), 4), prepared.points)
    np.testing.assert_allclose(again, recorded, atol=1e-5)  # the retrain harness repeats the user's run exactly
    without = task.evaluate(task.train(range(20, 120), 4), prepared.points)
    assert np.abs(without - recorded).max() > 1e-4  # and a deletion changes it
    with pytest.raises(Exception, match="seed 4"):
        task.full_run(0)


def test_a_subset_is_trained_in_the_full_runs_order_restricted_to_it(tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    seen: list[list[str]] = []

    def recording(texts, *args, **kwargs):
        seen[-1].extend(texts)
        return tokenizer(texts, *args, **kwargs)

    texts = [f"review number {i} was {'good' if i % 2 else 'bad'}" for i in range(23)]
    labels = [i % 2 for i in range(23)]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=32, num_labels=2)
    finals = []
    for rows in (None, range(23), [1, 2, 3, 5, 8, 13, 21]):
        seen.append([])
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
        train_classifier(model, recording, texts, labels, None, TrainConfig(epochs=2, batch_size=4, seed=7),
                         progress=False, rows=rows)
        finals.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert seen[0] == seen[1] and torch.equal(finals[0], finals[1])
    kept = {texts[i] for i in (1, 2, 3, 5, 8, 13, 21)}
    assert seen[2] == [t for t in seen[0] if t in kept] and len(seen[2]) == 14


def test_evaluate_lds_on_a_run_folder_end_to_end(run, tmp_path):
    root, summary = run
    out = tmp_path / "lds"
    args = ("evaluate", "lds", "--run-dir", root / "run", "--subsets", 8, "--test-points", 6, "--n-heldout", 40,
            "--methods", "TracIn-WE,TF-IDF,random", "--workers", 1, "--out", out)
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    setup = report["experiment"]["setup"]
    assert setup["model"]["architecture"] == "run-dir" and setup["model"]["settings"]["seed"] == 4
    assert setup["seeds"] == [4] and report["experiment"]["n_train"] == 120
    assert {row["method"] for row in report["summary"]} == {"TracIn-WE", "TF-IDF", "random"}
    assert report["n_subsets"] == 8 and report["recommendation"]
    assert (out / "results.json").is_file() and (out / "lds.png").is_file()
    retrains = sorted((out / "retrains").glob("*.npz"))
    assert len(retrains) == 8 + 4  # the subsets, plus the noise gate's full run and 3 random deletions
    shown = invoke(*args)  # a rerun resumes from the cache and prints the table and the recommendation
    assert shown.exit_code == 0, shown.output
    assert "TracIn-WE" in shown.output and "LDS" in shown.output
    assert sorted((out / "retrains").glob("*.npz")) == retrains


def test_run_dir_errors_name_the_fix(run, tmp_path):
    root, _ = run
    bare = tmp_path / "bare"
    shutil.copytree(root / "run", bare)
    (bare / "tracinwe_run.json").unlink()
    result = invoke("evaluate", "lds", "--run-dir", bare, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "trained by `tracinwe train`" in result.output
    result = invoke("evaluate", "lds", "--run-dir", tmp_path / "missing", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "is not a folder" in result.output
    result = invoke("evaluate", "lds", "--run-dir", root / "run", "--n-heldout", 5, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "held out" in result.output
