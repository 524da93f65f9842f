"""`tracinwe index build|info|suspicious` and `tracinwe query`: the persistent index from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tracinwe.cli.app import app

index_app = typer.Typer(
    help="Build a persistent TracIn-WE index of a training set, then query it in milliseconds.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")


def _fail(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def _checkpoints(checkpoint: list[Path] | None, run_dir: Path | None) -> list[Path]:
    if run_dir is not None:
        found = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else 0)
        found = [p for p in found if p.is_dir()]
        if not found:
            _fail(f"no checkpoint-* folders in {str(run_dir)!r}: pass --checkpoint for each checkpoint")
        return found
    if not checkpoint:
        _fail("no checkpoints: pass --checkpoint PATH (repeatable) or --run-dir RUN")
    return list(checkpoint)


@index_app.command("build")
def build(
    index_path: Path = typer.Argument(..., help="Folder to create (an interrupted build there resumes)."),
    data: str = typer.Option(..., "--data", help="Training data: bundled:NAME, a csv/jsonl/parquet file, or an HF dataset."),
    checkpoint: Optional[list[Path]] = typer.Option(None, "--checkpoint", help="A checkpoint folder, oldest first (repeatable)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Use every checkpoint-* folder in this training run."),
    learning_rate: Optional[list[float]] = typer.Option(None, "--learning-rate", help="One per checkpoint (default: recorded ones)."),
    text_column: Optional[str] = typer.Option(None, help="Text column of a table file."),
    label_column: Optional[str] = typer.Option(None, help="Label column of a table file."),
    text_pair_column: Optional[str] = typer.Option(None, help="Second-segment column for sentence pairs."),
    top_k: Optional[int] = typer.Option(10, help="TracIn-WE-Topk positions kept per example (0: all)."),
    max_length: int = typer.Option(128, help="Tokens per text."),
    dtype: str = typer.Option("float32", help="Stored gradient precision: float32 or float16."),
    projection_dim: Optional[int] = typer.Option(None, help="Add a seeded random projection of this size (faster approximate screen)."),
    seed: int = typer.Option(0, help="Seed of the projection."),
    batch_size: int = typer.Option(32, help="Examples per forward/backward pass."),
    chunk_size: Optional[int] = typer.Option(None, help="Examples per segment (default 4096)."),
    use_ray: bool = typer.Option(False, "--ray", help="Build with Ray actors (ray.init(address='auto') if a cluster runs)."),
    num_workers: int = typer.Option(2, help="Ray actors."),
) -> None:
    """Capture every training example's word-embedding gradients once and store them, token-major."""
    from rich.console import Console

    from tracinwe.data import load_dataset_source
    from tracinwe.errors import TracInWEError

    columns = {k: v for k, v in {"text_column": text_column, "label_column": label_column, "text_pair_column": text_pair_column}.items() if v}
    paths = _checkpoints(checkpoint, run_dir)
    options = dict(max_length=max_length, top_k=top_k or None, batch_size=batch_size)
    build_options = dict(dtype=dtype, projection_dim=projection_dim, seed=seed, chunk_size=chunk_size)
    try:
        dataset = load_dataset_source(data, **columns)
        if use_ray:
            from tracinwe.index.ray_build import build_index_on_ray

            try:
                import ray

                if not ray.is_initialized():
                    ray.init(address="auto") if _ray_cluster_running() else ray.init()
            except ImportError:
                _fail("Ray is not installed: pip install 'tracinwe[ray]'")
            index = build_index_on_ray(
                index_path, paths, learning_rate, dataset.texts, dataset.labels, num_workers, ids=dataset.ids,
                label_names=dataset.label_names, text_pairs=dataset.text_pairs, **options, **build_options,
            )
        else:
            from tracinwe.index import Index
            from tracinwe.tracin import TracInWE

            tw = TracInWE.from_checkpoints(paths, learning_rate, **options)
            index = Index.build_from_dataset(index_path, tw, dataset, progress=True, **build_options)
    except TracInWEError as exc:
        _fail(str(exc))
    Console().print(f"[green]index of {len(index)} examples[/green] in {index.path} ({len(index.manifest['segments'])} segments)")


def _ray_cluster_running() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


@index_app.command("info")
def info(index_path: Path = typer.Argument(..., help="An index folder.")) -> None:
    """What an index holds: size, settings, checkpoints, dense tokens, disk use."""
    from rich.console import Console
    from rich.table import Table

    from tracinwe.index.storage import MANIFEST, read_json
    from tracinwe.errors import TracInWEError

    try:
        manifest = read_json(index_path / MANIFEST, "index manifest")
    except TracInWEError as exc:
        _fail(str(exc))
    table = Table(title=str(index_path), show_header=False)
    size = sum(f["bytes"] for s in manifest["segments"] for f in s["files"].values())
    rows = {
        "examples": manifest["num_examples"],
        "segments": len(manifest["segments"]),
        "disk": f"{size / 2**20:.1f} MiB",
        "dtype": manifest["dtype"],
        "settings": json.dumps(manifest["settings"]),
        "checkpoints": ", ".join(f"{c['path']} (lr {c['learning_rate']:g})" for c in manifest["checkpoints"]),
        "dense tokens": " ".join(t["token"] for t in manifest["dense_tokens"]),
        "projection": json.dumps(manifest["projection"]),
        "labels": ", ".join(manifest["label_names"]),
    }
    for key, value in rows.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("query")
def query(
    index_path: Path = typer.Argument(..., help="An index built with `tracinwe index build`."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to explain."),
    file: Optional[Path] = typer.Option(None, "--file", help="A file with one text per line."),
    label: Optional[str] = typer.Option(None, "--label", help="Explain this label (index or name) instead of the prediction."),
    k: int = typer.Option(5, "--k", help="Proponents and opponents per text."),
    words: int = typer.Option(3, help="Shared words shown per neighbour."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """The training examples that most helped (proponents, score > 0) and hurt (opponents) each text."""
    from rich.console import Console

    from tracinwe.errors import TracInWEError
    from tracinwe.index import Index

    queries = list(texts or [])
    if file is not None:
        if not file.is_file():
            _fail(f"--file {str(file)!r} does not exist")
        queries += [line.strip() for line in file.read_text().splitlines() if line.strip()]
    if not queries:
        _fail("no texts: pass TEXT arguments or --file")
    try:
        index = Index.open(index_path)
        labels = None
        if label is not None:
            value: int | str = int(label) if label.isdigit() else label
            if isinstance(value, str) and value in index.label_names:
                value = index.label_names.index(value)
            labels = [value] * len(queries)
        results = index.query(queries, labels, k=k, words=words)
    except TracInWEError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
        return
    _print_results(results, index.label_names)


def _print_results(results, label_names: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        console.print(f"\n[bold]{r.text}[/bold]  explained label: {label_names[r.label]}  "
                      f"(predicted {label_names[r.prediction]}, p={max(r.probabilities):.2f})")
        for title, group in (("proponents (score > 0)", r.proponents), ("opponents (score < 0)", r.opponents)):
            table = Table(title=title, title_justify="left")
            for col in ("score", "id", "label", "text", "top shared words"):
                table.add_column(col, overflow="fold")
            for n in group:
                shared = ", ".join(f"{w.token} {w.contribution:+.2e}" for w in n.words)
                table.add_row(f"{n.score:+.3e}", n.id, n.label_name, n.text[:120], shared)
            console.print(table)


@index_app.command("suspicious")
def suspicious(
    index_path: Path = typer.Argument(..., help="An index folder."),
    k: int = typer.Option(20, "--k", help="How many examples to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Training examples of highest self-influence: likely mislabels or outliers."""
    from rich.console import Console
    from rich.table import Table

    from tracinwe.errors import TracInWEError
    from tracinwe.index import Index

    try:
        found = Index.open(index_path).suspicious(k=k)
    except TracInWEError as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps([n.to_json() for n in found], indent=2))
        return
    table = Table(title="highest self-influence")
    for col in ("self-influence", "id", "label", "text"):
        table.add_column(col, overflow="fold")
    for n in found:
        table.add_row(f"{n.score:.3e}", n.id, n.label_name, n.text[:120])
    Console().print(table)
