"""`tracinwe index build` / `tracinwe query` end to end on saved checkpoints and a CSV file."""

from __future__ import annotations

import csv
import json

import numpy as np
from typer.testing import CliRunner

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe.cli.app import app
from tracinwe.index import Index


def test_build_query_info_suspicious(tokenizer, tmp_path):
    from tracinwe.models.checkpoints import write_checkpoint_info

    run = tmp_path / "run"
    for step, (seed, lr) in enumerate(((8, 0.1), (9, 0.02)), start=1):
        folder = run / f"checkpoint-{step}"
        tiny_bert(seed, 2).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_checkpoint_info(folder, lr, step=step)
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "sentiment"])
        for i, (t, y) in enumerate(zip(TEXTS * 4, LABELS * 4)):
            writer.writerow([f"{t} #{i}", "pos" if y else "neg"])
    runner = CliRunner()
    out = runner.invoke(app, [
        "index", "build", "--out", str(tmp_path / "idx"), "--run-dir", str(run), "--data", str(table),
        "--text-column", "sentence", "--label-column", "sentiment", "--max-length", "64", "--chunk-size", "10", "--top-k", "10",
    ])
    assert out.exit_code == 0, out.output
    index = Index.open(tmp_path / "idx")
    assert len(index) == 24 and sorted(index.label_names) == ["neg", "pos"]
    assert index.tracin.learning_rates == [0.1, 0.02] and index.manifest.settings.capture.top_k == 10

    out = runner.invoke(app, ["query", str(tmp_path / "idx"), TEXTS[0], TEXTS[1], "--k", "3", "--json", "--label", "pos"])
    assert out.exit_code == 0, out.output
    results = json.loads(out.stdout)["results"]
    assert len(results) == 2 and all(len(r["proponents"]) == 3 for r in results)
    brute = index.tracin.scores(index.texts(), index.labels(), TEXTS[:2], [index.label_names.index("pos")] * 2)
    for i, r in enumerate(results):
        np.testing.assert_allclose([n["score"] for n in r["proponents"]], np.sort(brute[i])[::-1][:3], rtol=1e-5)

    out = runner.invoke(app, ["query", str(tmp_path / "idx"), TEXTS[2]])
    assert out.exit_code == 0 and "proponents" in out.output
    out = runner.invoke(app, ["index", "info", str(tmp_path / "idx")])
    assert out.exit_code == 0 and "[CLS]" in out.output
    out = runner.invoke(app, ["self-influence", "--index", str(tmp_path / "idx"), "--k", "3", "--json"])
    assert out.exit_code == 0 and len(json.loads(out.stdout)) == 3
    out = runner.invoke(app, ["query", str(tmp_path / "nowhere"), "text"])
    assert out.exit_code == 2 and "no index" in out.output


def test_build_with_projection_and_info(tokenizer, tmp_path):
    from tracinwe.models.checkpoints import write_checkpoint_info

    folder = tmp_path / "checkpoint-1"
    tiny_bert(3, 2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_checkpoint_info(folder, 0.1, step=1)
    table = tmp_path / "train.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows([f"{t} #{i}", y % 2] for i, (t, y) in enumerate(zip(TEXTS * 3, LABELS * 3)))
    runner = CliRunner()
    out = runner.invoke(app, ["index", "build", "--out", str(tmp_path / "idx"), "--checkpoint", str(folder), "--data", str(table),
                              "--max-length", "32", "--projection-dim", "6", "--projection-method", "gaussian"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["index", "info", str(tmp_path / "idx"), "--json"])
    assert json.loads(out.stdout)["projection"] == "gaussian p=6 (seed 0)"
    index = Index.open(tmp_path / "idx")
    assert index.projection.rows.shape == (16, 6)  # one checkpoint x hidden size 16
    out = runner.invoke(app, ["index", "build", "--out", str(tmp_path / "bad"), "--checkpoint", str(folder), "--data", str(table),
                              "--projection-dim", "6", "--projection-method", "svd"])
    assert out.exit_code != 0 and "projection method 'svd'" in out.output
