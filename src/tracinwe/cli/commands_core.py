"""`tracinwe demo`: the main job on bundled real data."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tracinwe.cli.common import exit_codes, json_option


def register(app: typer.Typer) -> None:
    """Attach ``demo`` to the application."""
    app.command()(demo)


def demo(
    out: Path = typer.Option(Path("tracinwe-demo"), help="Folder for the checkpoints, the index, report.html and summary.json."),
    n_train: int = typer.Option(1500, min=10, help="Training reviews to fine-tune on and index."),
    n_explain: int = typer.Option(6, min=1, help="Held-out reviews to explain (up to half misclassified)."),
    k: int = typer.Option(3, min=1, help="Proponents and opponents shown per review."),
    epochs: float = typer.Option(2.0, min=0.01, help="Fine-tuning epochs."),
    seed: int = typer.Option(0, help="Seed for the data split and the fine-tuning."),
    json_out: bool = json_option("Also print the summary as JSON at the end."),
) -> None:
    """The main job on real data: fine-tune, index, explain, flag suspicious labels, write report.html.

    Fine-tunes MiniLM-L6 on Rotten Tomatoes reviews, indexes the training set, explains held-out
    reviews (some misclassified), lists the most suspicious training labels and writes report.html.
    A rerun with the same settings reuses the checkpoints and the index.

    Example: tracinwe demo --out tracinwe-demo
    """
    from tracinwe.demo import DemoConfig, run_demo

    with exit_codes():
        summary = run_demo(out, DemoConfig(n_train=n_train, n_explain=n_explain, k=k, epochs=epochs, seed=seed))
    if json_out:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k not in ("examples", "suspicious")}, indent=2))
