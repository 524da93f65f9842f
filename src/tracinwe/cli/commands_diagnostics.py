"""`tracinwe cancellation` and `tracinwe mislabel-eval`: data-debugging diagnostics."""

from __future__ import annotations

from pathlib import Path

import typer

from tracinwe.cli.common import JSON_OPTION, exit_codes, print_json
from tracinwe.errors import TracInWEError
from tracinwe.report.terminal import literal, markup_safe


def register(app: typer.Typer) -> None:
    """Attach ``cancellation`` and ``mislabel-eval`` to the application."""
    app.command("cancellation")(cancellation)
    app.command("mislabel-eval")(mislabel_eval)


def load_classifier_for(model: str, num_labels: int, seed: int, max_length: int):
    """An HF sequence classifier and its tokenizer for ``num_labels`` classes.

    A fine-tuned classifier checkpoint must have ``num_labels`` classes; a base
    encoder (e.g. ``bundled:minilm-l6``) gets a fresh head seeded with ``seed``.
    A run folder holding ``checkpoint-*`` folders means its last checkpoint.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, logging

    from tracinwe.models.checkpoints import find_tokenizer_folder
    from tracinwe.models.huggingface import HuggingFaceClassifier
    from tracinwe.models.pretrained import resolve_model_name
    from tracinwe.run import checkpoint_folders, checkpoint_step

    folder = Path(resolve_model_name(model))
    if folder.is_dir() and not (folder / "config.json").is_file():
        if not any(checkpoint_step(p) is not None for p in folder.glob("checkpoint-*")):
            raise TracInWEError(f"{str(folder)!r} has no config.json and no checkpoint-* folders: pass a model folder")
        folder = checkpoint_folders(folder)[-1]
    if not folder.is_dir():
        raise TracInWEError(f"model {model!r} is not a folder: pass a checkpoint folder or bundled:minilm-l6")
    config = AutoConfig.from_pretrained(folder)
    is_classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if is_classifier and config.num_labels != num_labels:
        raise TracInWEError(
            f"model {str(folder)!r} has {config.num_labels} classes but the data has {num_labels} classes: "
            "pass data with the model's labels, or a base model to get a fresh head"
        )
    logging.set_verbosity_error()
    torch.manual_seed(seed)
    net = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=num_labels).eval()
    tok_folder = find_tokenizer_folder(folder) or folder
    tokenizer = AutoTokenizer.from_pretrained(tok_folder)
    return HuggingFaceClassifier(net, tokenizer, max_length=max_length), str(folder), not is_classifier


def cancellation(
    model: str = typer.Option(..., help="Checkpoint folder, run folder (its last checkpoint) or bundled:minilm-l6."),
    data: str = typer.Option(..., help="bundled:NAME, a csv/jsonl/parquet file or a HF dataset name."),
    n: int = typer.Option(200, help="Examples to measure (a stratified sample after de-duplication)."),
    out: Path = typer.Option(Path("cancellation"), help="Folder for cancellation.json and cancellation.png."),
    seed: int = typer.Option(0, help="Seed for the sample (and a fresh classification head)."),
    max_length: int = typer.Option(64, help="Tokens per text."),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Cancellation ratio C = sum ||g_i|| / ||sum g_i|| of every layer: which layers' gradients cancel.

    Example: tracinwe cancellation --model runs/mr --data bundled:rotten-tomatoes --n 200 --out cancellation
    """
    import torch

    from tracinwe.data import load_dataset_source
    from tracinwe.evaluate.cancellation import layer_cancellation

    console = _wide(json_out)
    with exit_codes():
        dataset = load_dataset_source(data).dedupe().sample(n, seed=seed)
        clf, folder, fresh_head = load_classifier_for(model, dataset.num_labels, seed, max_length)
        if fresh_head:
            console.print(f"[yellow]note:[/yellow] {markup_safe(folder)} is not a fine-tuned classifier; "
                          f"its head is new (seed {seed})")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        report = layer_cancellation(clf, dataset.texts, dataset.labels, max_length=max_length, device=device, progress=True)
        report.model["name"] = Path(folder).name
        report.model["path"] = folder
        report.settings.update({"data": data, "n": len(dataset), "seed": seed, "fresh_head": fresh_head})
        json_path, png_path = report.save(out)
    if json_out:
        print_json(report.to_json())
        return
    console.print(report.table())
    console.print(literal(f"wrote {json_path} and {png_path}"))


def mislabel_eval(
    data: str = typer.Option(..., help="bundled:NAME, a csv/jsonl/parquet file or a HF dataset name."),
    flip: float = typer.Option(0.1, help="Share of training labels to flip (0 with a confidence column: only relate to it)."),
    seed: int = typer.Option(0, help="Seed for the sample, the flips, the initialisation and the example order."),
    n: int = typer.Option(3000, help="Training texts (a stratified sample after de-duplication)."),
    heldout: int = typer.Option(500, help="Held-out texts, for the model's accuracy only."),
    methods: str = typer.Option(",".join(("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "TracIn-middle", "loss", "random")),
                                help="Comma-separated self-influence methods."),
    architecture: str = typer.Option("cnn", help="cnn (TokenCNN over BERT ids) or bert-small (2 layers, hidden 128)."),
    epochs: int = typer.Option(3, help="Training epochs (SGD + momentum 0.9)."),
    learning_rate: float = typer.Option(0.1, help="SGD learning rate."),
    checkpoints: int = typer.Option(3, help="Evenly spaced checkpoints used by the TracIn methods."),
    max_length: int = typer.Option(48, help="Tokens per text."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    out: Path = typer.Option(Path("mislabel.json"), help="JSON file for the results and the full configuration."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Flip a share of the labels, train a small model, and see which self-influence finds the flips.

    Example: tracinwe mislabel-eval --data bundled:sms-spam --flip 0.1 --n 3000 --out mislabel.json
    """
    from tracinwe.evaluate.mislabel import MislabelSetup, run_mislabel_detection
    from tracinwe.training.small import SmallModelConfig

    with exit_codes():
        model = SmallModelConfig(architecture=architecture, epochs=epochs, learning_rate=learning_rate,
                                 num_checkpoints=checkpoints, max_length=max_length, device=device)
        setup = MislabelSetup(source=data, n=n, flip_fraction=flip, seed=seed, n_heldout=heldout,
                              methods=tuple(m.strip() for m in methods.split(",") if m.strip()), model=model)
        report = run_mislabel_detection(setup, progress=not json_out)
        saved = report.save(out)
    if json_out:
        print_json(report.to_json())
        return
    console = _wide(json_out)
    console.print(report.table())
    console.print(literal(f"wrote {saved}"))


def _wide(json_out: bool):
    """Where the tables go (stderr under --json), at least 120 columns wide: the per-method tables need them."""
    from rich.console import Console

    return Console(width=max(Console().width, 120), stderr=json_out)
