"""`tracinwe demo`: the main job on bundled real data."""

from __future__ import annotations

from pathlib import Path

import typer

from tracinwe.cli.app import app


@app.command()
def demo(
    out: Path = typer.Option(Path("tracinwe-demo"), help="Folder for the fine-tuned checkpoints and the summary."),
    n_train: int = typer.Option(1500, help="Training reviews to fine-tune on."),
    n_explain: int = typer.Option(6, help="Held-out reviews to explain (misclassified ones first)."),
    epochs: float = typer.Option(2.0, help="Fine-tuning epochs."),
    seed: int = typer.Option(0, help="Seed for the data split and the fine-tuning."),
) -> None:
    """Fine-tune MiniLM-L6 on Rotten Tomatoes and explain held-out predictions with TracIn-WE."""
    from tracinwe.demo import DemoConfig, run_demo

    run_demo(out, DemoConfig(n_train=n_train, n_explain=n_explain, epochs=epochs, seed=seed))
