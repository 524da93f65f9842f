"""The main job: fine-tune MiniLM-L6 on real Rotten Tomatoes reviews, index the training set,
explain held-out reviews (some misclassified), list suspicious labels, write ``report.html``.

Every step shows progress; a rerun with the same settings reuses the checkpoints and the index.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tracinwe.data import load_dataset_source
from tracinwe.io import write_json_atomic
from tracinwe.run import checkpoint_folders, train_run
from tracinwe.tracin import TracInWE
from tracinwe.training import TrainConfig


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    n_train: int = 1500
    n_heldout: int = 200
    n_explain: int = 6
    k: int = 3
    n_suspicious: int = 10
    epochs: float = 2.0
    learning_rate: float = 4e-5
    max_length: int = 48
    seed: int = 0


def _train_or_reuse(folder: Path, train, config: DemoConfig, console: Console) -> list[Path]:
    """Fine-tune into a run folder (or reuse the finished checkpoints of an earlier run with the same settings)."""
    marker = folder / "demo_config.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(config):
        found = checkpoint_folders(folder) if any(folder.glob("checkpoint-*")) else []
        if len(found) == 3:
            console.print(f"[dim]reusing the fine-tuned checkpoints in {folder}[/]")
            return found
    recipe = TrainConfig(epochs=config.epochs, learning_rate=config.learning_rate, batch_size=16, num_checkpoints=3,
                         max_length=config.max_length, seed=config.seed)
    summary = train_run(folder, "bundled:minilm-l6", train, recipe, data="bundled:rotten-tomatoes", overwrite=True,
                        status=console.status)
    write_json_atomic(marker, asdict(config))
    return [Path(p) for p in summary["checkpoints"]]


def _index_or_reuse(folder: Path, tw: TracInWE, train, console: Console):
    """Build the index of the training set (or open the one an earlier run with the same rows left)."""
    from tracinwe.index import Index, IndexFormatError, IndexMismatchError

    if (folder / "manifest.json").is_file():
        try:
            index = Index.open(folder, tracin=tw)
            if index.ids() == list(train.ids):
                console.print(f"[dim]reusing the index in {folder}[/]")
                return index
        except (IndexFormatError, IndexMismatchError):
            pass
    if folder.exists():  # stale (other rows or checkpoints) or complete-but-different: start over
        shutil.rmtree(folder)
    # segments of 256 rows: the progress bar moves every 256 reviews (and an interruption loses less)
    return Index.build_from_dataset(folder, tw, train, progress=True, chunk_size=256)


def _steps_table(steps: dict[str, float], accuracy: float, n_train: int, n_heldout: int, out: Path, results) -> Table:
    table = Table(title="summary", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, seconds in steps.items():
        table.add_row(name, f"{seconds:.1f} s")
    table.add_row("total", f"{sum(steps.values()):.0f} s", style="bold")
    table.add_row("training reviews / held out", f"{n_train} / {n_heldout}")
    table.add_row("held-out accuracy", f"{accuracy:.1%}")
    wrong = sum(r.prediction != r.label for r in results)
    table.add_row("reviews explained (misclassified)", f"{len(results)} ({wrong})")
    table.add_row("report", str(out / "report.html"))
    return table


def run_demo(out_dir: str | Path = "tracinwe-demo", config: DemoConfig | None = None, console: Console | None = None) -> dict:
    """Run the demo end to end and return its summary (also written to ``out_dir/summary.json``).

    ``config=None`` runs the default `DemoConfig`.
    """
    from tracinwe.report import render_report
    from tracinwe.report.console import result_tables, suspicious_table
    from tracinwe.report.selection import pick_examples

    config = DemoConfig() if config is None else config
    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[name] = now - clock
        clock = now

    console.rule("[bold]1. Real data: Rotten Tomatoes review snippets")
    with console.status("loading bundled:rotten-tomatoes ..."):
        data = load_dataset_source("bundled:rotten-tomatoes")
    train_pool, heldout_pool = data.split(test_fraction=0.2, seed=config.seed)
    train = train_pool.sample(config.n_train, seed=config.seed)
    heldout = heldout_pool.sample(config.n_heldout, seed=config.seed)
    console.print(f"{len(train)} training reviews, {len(heldout)} held out; labels {train.label_names}")
    lap("load data")

    console.rule("[bold]2. Fine-tune MiniLM-L6, saving 3 checkpoints with their learning rates")
    checkpoints = _train_or_reuse(out / "run", train, config, console)
    tw = TracInWE.from_checkpoints(checkpoints, max_length=config.max_length)
    with console.status("loading the 3 checkpoints ..."):
        tw.keep_loaded()
    console.print(f"checkpoints {[c.name.split('/')[-1] for c in tw.checkpoints]}, learning rates {tw.learning_rates}")
    lap("fine-tune")

    console.rule("[bold]3. Index the training set: word-embedding gradients, once per checkpoint")
    index = _index_or_reuse(out / "index", tw, train, console)
    lap("build index")

    console.rule("[bold]4. Predict the held-out reviews")
    with console.status(f"predicting {len(heldout)} reviews ..."):
        probs = tw.predict(heldout.texts)
    accuracy = float((probs.argmax(1) == np.array(heldout.labels)).mean())
    console.print(f"held-out accuracy: [bold]{accuracy:.1%}[/] on {len(heldout)} reviews")
    chosen = heldout.subset(pick_examples(probs, heldout.labels, config.n_explain))
    lap("predict")

    console.rule("[bold]5. Which training reviews made it say this, through which words")
    console.print(f"[dim]{TracInWE.sign_convention}. Each review is explained for its gold label: "
                  "a misclassified review's opponents are the training reviews that pushed it the wrong way.[/]")
    with console.status(f"explaining {len(chosen)} reviews against {len(index)} training reviews ..."):
        results = index.query(chosen.texts, chosen.labels, k=config.k, words=None)
    for r in results:
        head, tables = result_tables(r, train.label_names, gold=True)
        console.print(head)
        for t in tables:
            console.print(t)
    lap("explain")

    console.rule("[bold]6. Suspicious training labels (highest self-influence)")
    suspicious = index.suspicious(k=config.n_suspicious)
    console.print(suspicious_table(suspicious))
    lap("suspicious labels")

    console.rule("[bold]7. The HTML report")
    with console.status("scoring every training review for the histograms ..."):
        scores = index.scores(chosen.texts, chosen.labels)
    report = render_report(
        results, suspicious, train.label_names, "TracIn-WE on Rotten Tomatoes (MiniLM-L6)", out / "report.html",
        tokenizer=tw, scores=scores, self_influence=index.self_influence(),
        note=f"MiniLM-L6 fine-tuned on {len(train)} reviews, held-out accuracy {accuracy:.1%}; "
             "each review explained for its gold label.",
    )
    console.print(f"wrote [bold]{report}[/] (open it in a browser; no network needed)")
    lap("report")

    summary = {
        "accuracy": accuracy, "config": asdict(config), "steps_seconds": steps, "seconds": sum(steps.values()),
        "report": str(report), "index": str(out / "index"), "run": str(out / "run"),
        "examples": [r.to_json() for r in results], "suspicious": [n.to_json() for n in suspicious],
    }
    write_json_atomic(out / "summary.json", summary)
    console.print(_steps_table(steps, accuracy, len(train), len(heldout), out, results))
    console.print(f"next: [bold]tracinwe serve {out / 'index'}[/] to explore in a browser")
    return summary
