"""`tracinwe index build | info` and `tracinwe query`: the persistent index from the shell."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from tracinwe.cli.common import (
    CHECKPOINTS_FROM,
    JSON_OPTION,
    LABEL_COLUMN,
    PAIR_COLUMN,
    TEXT_COLUMN,
    VERIFY,
    exit_codes,
    label_ids,
    load_data,
    open_index,
    output_console,
    print_json,
    print_json_stream,
    run_training_data,
)
from tracinwe.errors import TracInWEError
from tracinwe.report.terminal import literal, markup_safe
from tracinwe.run import checkpoint_folders, with_label_names

index_app = typer.Typer(
    help="Build a persistent TracIn-WE index of a training set (gradients stored once), then query it in milliseconds.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach ``query`` and the ``index build | info`` group to the application."""
    app.command()(query)
    app.add_typer(index_app, name="index")


def _checkpoints(checkpoint: list[Path] | None, run_dir: Path | None) -> list[Path]:
    if (run_dir is None) == (not checkpoint):
        raise TracInWEError("pass --run-dir RUN (a `tracinwe train` folder) or --checkpoint PATH for each checkpoint, not both")
    return checkpoint_folders(run_dir) if run_dir is not None else list(checkpoint)


@index_app.command("build")
def build(
    out: Path = typer.Option(..., help="The index folder to create (an interrupted build there resumes)."),
    run_dir: Optional[Path] = typer.Option(None, help="A `tracinwe train` run folder: its checkpoints, data and rows."),
    checkpoint: Optional[list[Path]] = typer.Option(None, help="Or: a checkpoint folder, oldest first (repeatable)."),
    learning_rate: Optional[list[float]] = typer.Option(None, help="One per checkpoint (default: the recorded ones)."),
    data: Optional[str] = typer.Option(None, help="Training data (default: the data and rows recorded by `train`)."),
    text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN, text_pair_column: str = PAIR_COLUMN,
    n_train: Optional[int] = typer.Option(None, min=1, help="Index a stratified sample of this many examples."),
    top_k: Optional[int] = typer.Option(None, min=1,
                                        help="TracIn-WE-Topk: keep the k heaviest positions per example (paper: 10)."),
    max_length: Optional[int] = typer.Option(None, min=8, help="Tokens per text (default: the run's, else 128)."),
    dtype: str = typer.Option("float32", help="float32, or float16 (half the disk)."),
    projection_dim: Optional[int] = typer.Option(
        None, min=1, help="Also store a projection of the rows to this size (fast screen, exact re-rank)."),
    projection_method: str = typer.Option(
        "pca", help="pca (fitted on a seeded sample; accurate) or gaussian (seeded, data-free)."),
    seed: int = typer.Option(0, help="Seed of the sample and of the projection."),
    batch_size: int = typer.Option(32, min=1, help="Examples per forward/backward pass."),
    precision: str = typer.Option("float32", help="float32 (exact), or bfloat16: the forward pass under autocast "
                                                  "(faster on a GPU; scores within ~2% of the largest)."),
    chunk_size: Optional[int] = typer.Option(None, min=1, help="Examples per segment (default 4096)."),
    use_ray: bool = typer.Option(False, "--ray", help="Build with Ray actors (joins the cluster in RAY_ADDRESS if set)."),
    num_workers: int = typer.Option(2, min=1, help="Ray actors (with --ray)."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Capture every training example's word-embedding gradients at every checkpoint once; store them token-major.

    Example: tracinwe index build --run-dir runs/mr --out mr.index
    """
    with exit_codes():
        from tracinwe.capture.gradients import PRECISIONS

        if precision not in PRECISIONS:
            raise TracInWEError(f"--precision {precision}: not one of {', '.join(PRECISIONS)}")
        paths = _checkpoints(checkpoint, run_dir)
        from tracinwe.capture.allocator import retain_freed_memory
        from tracinwe.cli.commands_lm import build_lm_index, is_lm_checkpoints
        from tracinwe.index import LocalBuild

        retain_freed_memory()  # a long capture: freed activations are reused, not page-faulted in again every batch
        strategy = _ray_build(num_workers) if use_ray else LocalBuild()
        options = {"dtype": dtype, "projection_dim": projection_dim, "projection_method": projection_method, "seed": seed,
                   "chunk_size": chunk_size, "strategy": strategy}
        if is_lm_checkpoints(run_dir, paths):
            if label_column is not None or text_pair_column is not None or n_train is not None:
                raise TracInWEError("--label-column, --text-pair-column and --n-train are for classifiers: "
                                    "a causal-LM index holds all the run's training documents")
            index = build_lm_index(out, paths, run_dir, data, text_column, learning_rate, max_length, top_k, batch_size,
                                   options, precision)
            return _built(out, index, len(paths), top_k, dtype, json_out)
        if run_dir is not None:
            dataset, run_length = run_training_data(run_dir, data, text_column, label_column, text_pair_column)
        elif data is None:
            raise TracInWEError("no training data: pass --data (the data the checkpoints were trained on)")
        else:
            dataset, run_length = load_data(data, text_column, label_column, text_pair_column), 128
            names = _checkpoint_label_names(paths[-1])
            if names is not None:  # the classes the model was trained with, in its order
                dataset = with_label_names(dataset, names, data, owner=f"the checkpoint {paths[-1]}")
        if n_train is not None:
            dataset = dataset.sample(n_train, seed=seed)
        from tracinwe.index import Index
        from tracinwe.tracin import TracInWE

        tw = TracInWE.from_checkpoints(paths, learning_rate, max_length=max_length or run_length, top_k=top_k,
                                       batch_size=batch_size, precision=precision)
        index = Index.build_from_dataset(out, tw, dataset, progress=True, **options)
        _built(out, index, len(paths), top_k, dtype, json_out)


def _built(out: Path, index, n_checkpoints: int, top_k: int | None, dtype: str, json_out: bool) -> None:
    """Print what `index build` wrote (or its JSON)."""
    summary = {"index": str(out), "task": index.manifest.task, "examples": len(index), "label_names": index.label_names,
               "checkpoints": n_checkpoints, "top_k": top_k, "dtype": dtype, "segments": len(index.manifest.segments)}
    if json_out:
        print_json(summary)
        return
    nxt = (f"tracinwe index info {markup_safe(out)}" if index.is_causal_lm  # explain --generate takes no --index yet
           else f'tracinwe explain "some text" --index {markup_safe(out)}')
    output_console(json_out).print(
        f"indexed {summary['examples']} {'documents' if index.is_causal_lm else 'examples'} x {n_checkpoints} checkpoints "
        f"in [bold]{markup_safe(out)}[/bold]; next: {nxt}")


def _checkpoint_label_names(folder: Path) -> list[str] | None:
    """The class names a HuggingFace checkpoint records; None for the defaults (LABEL_0, LABEL_1, ...) or none."""
    from transformers import AutoConfig

    try:
        id2label = AutoConfig.from_pretrained(folder).id2label or {}
    except (OSError, ValueError):
        return None  # not readable here: the build reports what is wrong with the folder
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(len(id2label))]
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def _ray_build(num_workers: int):
    """A `RayBuild` on the cluster in RAY_ADDRESS (else a local Ray instance)."""
    try:
        import ray
    except ImportError:
        raise TracInWEError("Ray is not installed: pip install 'tracinwe[ray]', or build without --ray") from None
    from tracinwe.index import RayBuild

    if not ray.is_initialized():
        ray.init(address="auto") if os.environ.get("RAY_ADDRESS") else ray.init()
    return RayBuild(num_workers=num_workers)


@index_app.command("info")
def info(index_path: Path = typer.Argument(..., help="An index folder."), json_out: bool = JSON_OPTION) -> None:
    """What an index holds: size, settings, checkpoints, dense tokens, disk use."""
    from rich.table import Table

    from tracinwe.index.integrity import read_manifest

    with exit_codes():
        manifest = read_manifest(index_path)
    segments = manifest.segments or ()
    size = sum(f.bytes for s in segments for f in s.files.values())
    rows = {
        "examples": manifest.num_examples,
        "segments": len(segments),
        "disk": f"{size / 2**20:.1f} MiB",
        "dtype": manifest.dtype,
        "settings": json.dumps(manifest.settings.to_json()),
        "checkpoints": ", ".join(f"{c.path} (lr {c.learning_rate:g})" for c in manifest.checkpoints),
        "dense tokens": " ".join(t.token for t in manifest.dense_tokens),
        "projection": _projection_summary(manifest.projection),
        "labels": ", ".join(manifest.label_names),
    }
    if json_out:
        print_json({**rows, "disk_bytes": size})
        return
    table = Table(title=literal(index_path), show_header=False)
    for key, value in rows.items():
        table.add_row(key, literal(value))
    output_console(json_out).print(table)


def query(
    index: Path = typer.Argument(..., help="An index built by `tracinwe index build`."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to query (or --data)."),
    data: Optional[str] = typer.Option(
        None, help="A file / dataset of texts to query instead (its labels are explained when present)."),
    text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN, text_pair_column: str = PAIR_COLUMN,
    label: Optional[list[str]] = typer.Option(
        None, help="Explain this label (name or index; one for all texts or one per text) instead of the prediction."),
    k: int = typer.Option(10, min=1, help="Proponents and opponents per text."),
    words: int = typer.Option(0, min=0, help="Shared words listed per neighbour (0: none, fastest)."),
    checkpoints_from: Optional[Path] = CHECKPOINTS_FROM,
    verify: str = VERIFY,
    json_out: bool = JSON_OPTION,
) -> None:
    """Top-k proponents and opponents of many texts at once (exact scores); --json for scripts.

    Example: tracinwe query mr.index "a gorgeous film" "a mess" --k 5 --json
    """
    with exit_codes():
        if bool(texts) == bool(data):
            raise TracInWEError("pass texts as arguments or --data FILE, not both and not neither")
        idx = open_index(index, checkpoints_from, verify)
        if idx.is_causal_lm:
            raise TracInWEError(f"{str(index)!r} is a causal language model index: `query` explains classifier "
                                "predictions; explain a completion with tracinwe explain --generate PROMPT --run-dir RUN")
        labels, pairs = None, None
        if data:
            dataset = with_label_names(load_data(data, text_column, label_column, text_pair_column), idx.label_names, data)
            texts, labels, pairs = dataset.texts, dataset.labels, dataset.text_pairs
        if label:
            labels = label_ids(label, len(texts), idx.label_names)
        results = idx.iter_query(list(texts), labels, k=k, words=words, test_pairs=pairs)  # checked before any output
        if json_out:
            print_json_stream({"label_names": idx.label_names}, "results", (r.to_json() for r in results))
            return
        from tracinwe.report.console import result_tables

        console = output_console(json_out)
        for r in results:
            head, tables = result_tables(r, idx.label_names, gold=labels is not None, words=words > 0)
            console.print(head)
            for t in tables:
                console.print(t)


def _projection_summary(projection) -> str:
    if projection is None:
        return "none"
    extra = f", fitted on {projection.probe} examples" if projection.method == "pca" else ""
    return f"{projection.method} p={projection.dim} (seed {projection.seed}{extra})"
