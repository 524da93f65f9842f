"""The main job: fine-tune MiniLM-L6 on real Rotten Tomatoes reviews, then explain held-out predictions."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from tracinwe.data import load_dataset_source
from tracinwe.models.pretrained import minilm_l6_path
from tracinwe.tracin import TracInWE
from tracinwe.training import TrainConfig, train_classifier


@dataclass
class DemoConfig:
    """Sizes of the demo; the defaults finish in a few minutes on 2 CPU cores."""

    n_train: int = 1500
    n_heldout: int = 200
    n_explain: int = 6
    k: int = 3
    epochs: float = 2.0
    learning_rate: float = 4e-5
    max_length: int = 48
    seed: int = 0


def _train_or_reuse(folder: Path, train, config: DemoConfig, console: Console) -> list[Path]:
    """Fine-tune (or reuse the finished checkpoints of an earlier run with the same settings)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, logging

    logging.set_verbosity_error()
    marker = folder / "demo_config.json"
    if marker.is_file() and json.loads(marker.read_text()) == asdict(config):
        found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if len(found) == 3:
            console.print(f"[dim]reusing the fine-tuned checkpoints in {folder}[/]")
            return found
    base = minilm_l6_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(train.label_names)), label2id={n: i for i, n in enumerate(train.label_names)}
    )
    run = train_classifier(
        model, tokenizer, train.texts, train.labels, folder,
        TrainConfig(epochs=config.epochs, learning_rate=config.learning_rate, batch_size=16, num_checkpoints=3,
                    max_length=config.max_length, seed=config.seed),
    )
    marker.write_text(json.dumps(asdict(config), indent=2))
    return run.checkpoints


def _pick_examples(probs: np.ndarray, labels: list[int], n: int) -> list[int]:
    """A mix of held-out reviews: the misclassified ones first (up to half), then confident correct ones."""
    pred = probs.argmax(1)
    wrong = [i for i in np.argsort(-probs.max(1)) if pred[i] != labels[i]]
    right = [i for i in np.argsort(-probs.max(1)) if pred[i] == labels[i]]
    chosen = wrong[: n // 2]
    return chosen + right[: n - len(chosen)]


def run_demo(out_dir: str | Path = "tracinwe-demo", config: DemoConfig = DemoConfig(), console: Console | None = None) -> dict:
    """Run the demo end to end and return its summary (also written to ``out_dir/summary.json``)."""
    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = load_dataset_source("bundled:rotten-tomatoes")
    train_pool, heldout_pool = data.split(test_fraction=0.2, seed=config.seed)
    train = train_pool.sample(config.n_train, seed=config.seed)
    heldout = heldout_pool.sample(config.n_heldout, seed=config.seed)
    console.rule("[bold]1. Fine-tune MiniLM-L6 on Rotten Tomatoes")
    console.print(f"{len(train)} training reviews, {len(heldout)} held out; labels {train.label_names}")
    checkpoints = _train_or_reuse(out / "run", train, config, console)
    tw = TracInWE.from_checkpoints(checkpoints, max_length=config.max_length, progress=True)
    console.print(f"checkpoints: {[c.name for c in checkpoints]}, learning rates {tw.learning_rates}")

    console.rule("[bold]2. Predict the held-out reviews")
    probs = tw.predict(heldout.texts)
    accuracy = float((probs.argmax(1) == np.array(heldout.labels)).mean())
    console.print(f"held-out accuracy: [bold]{accuracy:.1%}[/] on {len(heldout)} reviews")
    chosen = _pick_examples(probs, heldout.labels, config.n_explain)
    texts = [heldout.texts[i] for i in chosen]

    console.rule("[bold]3. TracIn-WE: which training reviews made it say this, through which words")
    console.print(f"[dim]{TracInWE.sign_convention}[/]")
    preds = probs[chosen].argmax(1).tolist()
    scores = tw.scores(train.texts, train.labels, texts, preds)  # explain the predictions
    test_records = tw.capture(texts, preds)
    summary = {"accuracy": accuracy, "examples": [], "config": asdict(config)}
    names = train.label_names
    for row, (i, text) in enumerate(zip(chosen, texts)):
        gold, pred = heldout.labels[i], preds[row]
        verdict = "[green]correct[/]" if gold == pred else "[red]MISCLASSIFIED[/]"
        console.print(f"\n[bold]“{text}”[/]\n  gold: {names[gold]}, predicted: {names[pred]} (p={probs[i, pred]:.2f}) {verdict}")
        order = np.argsort(-scores[row])
        entry = {"text": text, "gold": names[gold], "predicted": names[pred], "proponents": [], "opponents": []}
        for kind, idx in (("proponents", order[: config.k]), ("opponents", order[::-1][: config.k])):
            table = Table(title=f"top {kind}", title_justify="left", show_lines=False, expand=True)
            table.add_column("score", justify="right", width=10)
            table.add_column("label", width=7)
            table.add_column("training review")
            table.add_column("words that carry it", width=34)
            train_records = tw.capture([train.texts[j] for j in idx], [train.labels[j] for j in idx], role="train")
            for slot, j in enumerate(idx):
                words = tw.explain_pair(train_records, test_records, train.texts[j], text, slot, row)
                top = [w for w in words if w.token not in ("[CLS]", "[SEP]")][:3]
                table.add_row(
                    f"{scores[row, j]:+.2e}", names[train.labels[j]], train.texts[j],
                    ", ".join(f"{w.token} ({w.contribution:+.1e})" for w in top),
                )
                entry[kind].append({"score": float(scores[row, j]), "label": names[train.labels[j]],
                                    "text": train.texts[j], "words": [w.to_json() for w in words[:5]]})
            console.print(table)
        summary["examples"].append(entry)
    summary["seconds"] = time.perf_counter() - started
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out / "summary.json")
    console.rule(f"done in {summary['seconds']:.0f} s; summary in {out / 'summary.json'}")
    return summary
