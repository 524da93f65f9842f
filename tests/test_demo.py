"""The main job, `tracinwe demo`, end to end at a small size on the real Rotten Tomatoes data and MiniLM-L6."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from tracinwe.data import load_dataset_source
from tracinwe.demo import DemoConfig, run_demo
from tracinwe.tracin import TracInWE


@pytest.mark.slow
def test_demo_explains_held_out_reviews_exactly_and_resumes(tmp_path):
    config = DemoConfig(n_train=96, n_heldout=40, n_explain=3, k=2, n_suspicious=4, epochs=1.0)
    console = Console(record=True, width=120)
    summary = run_demo(tmp_path / "demo", config, console=console)

    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["accuracy"] == summary["accuracy"] and 0.0 <= saved["accuracy"] <= 1.0
    assert len(saved["examples"]) == 3 and len(saved["suspicious"]) == 4
    report = (tmp_path / "demo" / "report.html").read_text()
    assert all(e["text"][:30] in report for e in saved["examples"])

    # The proponents and opponents it printed are exactly the extremes of the brute-force scores.
    checkpoints = sorted((tmp_path / "demo" / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3
    tw = TracInWE.from_checkpoints(checkpoints, max_length=config.max_length)
    data = load_dataset_source("bundled:rotten-tomatoes")
    train = data.split(test_fraction=0.2, seed=config.seed)[0].sample(config.n_train, seed=config.seed)
    first = saved["examples"][0]
    scores = tw.scores(train.texts, train.labels, [first["text"]], [first["label"]])[0]
    assert [n["score"] for n in first["proponents"]] == pytest.approx(np.sort(scores)[::-1][:2], rel=1e-5)
    assert [n["score"] for n in first["opponents"]] == pytest.approx(np.sort(scores)[:2], rel=1e-5)
    assert all(n["score"] > 0 for n in first["proponents"]) and all(n["score"] < 0 for n in first["opponents"])
    self_influence = tw.self_influence(train.texts, train.labels)
    assert saved["suspicious"][0]["score"] == pytest.approx(self_influence.max(), rel=1e-5)
    assert "proponents (score > 0)" in console.export_text()

    # A rerun with the same settings reuses the checkpoints and the index.
    again = Console(record=True, width=120)
    run_demo(tmp_path / "demo", config, console=again)
    text = again.export_text()
    assert "reusing the fine-tuned checkpoints" in text and "reusing the index" in text
