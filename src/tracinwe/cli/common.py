"""What every command shares: exit codes, JSON output, data loading, run folders and indexes.

Every command prints rich tables (or ``--json`` for scripts; messages then go to
stderr) and exits 0 on success, 1 on a runtime failure, 2 on bad input (a
one-line message in red, no traceback). Strings from the data or the user
(texts, labels, paths, error messages) are printed with
`tracinwe.report.terminal`: literally, never as markup or control sequences.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from tracinwe.errors import LabelError, TracInWEError
from tracinwe.report.terminal import literal

TEXT_COLUMN = typer.Option(None, help="Column holding the text (csv/jsonl/parquet/HF data; default 'text').")
LABEL_COLUMN = typer.Option(None, help="Column holding the label (default 'label').")
PAIR_COLUMN = typer.Option(None, help="Column holding the second text of sentence pairs (optional).")
CHECKPOINTS_FROM = typer.Option(None, "--checkpoints-from",
                                help="The run folder holding the index's checkpoints, if it moved (found by folder name).")

VERIFY = typer.Option("quick", help="Index checks: quick (file sizes, small files hashed on open, each segment's large "
                                    "files hashed before its first read), full (everything hashed on open) or none "
                                    "(storage you trust: the first query skips hashing the whole index).")

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def json_option(help: str = "Print JSON on stdout for scripts (messages go to stderr).") -> Any:
    """The ``--json`` flag of every command; ``help`` only where a command's JSON differs (e.g. printed after its tables)."""
    return typer.Option(False, "--json", help=help)


JSON_OPTION = json_option()


@contextmanager
def exit_codes() -> Iterator[None]:
    """Bad input (a TracInWEError) -> one red line, exit 2; anything else that breaks -> exit 1."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except TracInWEError as exc:
        stderr.print(Text.assemble(("error:", "red"), " ", literal(exc)))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        stderr.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None
    except Exception as exc:  # a runtime failure: say what, keep it to one line
        first = (str(exc).strip().splitlines() or [""])[0]
        stderr.print(Text.assemble(("failed:", "red"), " ", literal(f"{type(exc).__name__}: {first}")))
        raise typer.Exit(1) from None


def print_checkpoint_table(title: str, summary: dict, json_out: bool) -> Console:
    """The run's checkpoints and their learning rates (``tracinwe train``, both tasks); returns the console."""
    from rich.table import Table

    table = Table(title=literal(title), title_justify="left")
    table.add_column("checkpoint")
    table.add_column("learning rate", justify="right")
    for path, rate in zip(summary["checkpoints"], summary["learning_rates"]):
        table.add_row(literal(path), f"{rate:.3g}")
    console = output_console(json_out)
    console.print(table)
    return console


def output_console(json_out: bool) -> Console:
    """Where tables go: stdout normally; stderr when stdout carries JSON."""
    return stderr if json_out else Console(highlight=False)


def print_json(value) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_json_stream(head: dict, key: str, items: Iterable) -> None:
    """Print what ``print_json({**head, key: list(items)})`` prints, each item as soon as it comes."""
    opening = json.dumps(head, indent=2, ensure_ascii=False)
    typer.echo(f"{opening[:opening.rindex('}')].rstrip()}{',' if head else ''}\n  {json.dumps(key)}: [", nl=False)
    count = 0
    for item in items:
        body = json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n    ")
        typer.echo(f"{',' if count else ''}\n    {body}", nl=False)
        count += 1
    typer.echo("\n  ]\n}" if count else "]\n}")


def load_data(source: str, text_column, label_column, pair_column, split: str = "train"):
    from tracinwe.data import load_dataset_source

    with stderr.status(literal(f"loading {source} ...")):
        return load_dataset_source(
            source, split=split, text_column=text_column, label_column=label_column, text_pair_column=pair_column
        ).validate()


def label_ids(labels: Sequence[str] | None, n: int, names: Sequence[str]) -> list[int] | None:
    """``--label`` values (names or indices; one for all texts or one per text) as class indices."""
    if not labels:
        return None
    if len(labels) not in (1, n):
        raise LabelError(f"{len(labels)} --label values for {n} texts: pass one label, or one per text")
    out = []
    for value in labels:
        if value in names:
            out.append(list(names).index(value))
        elif value.lstrip("-").isdigit() and 0 <= int(value) < len(names):
            out.append(int(value))
        else:
            raise LabelError(f"label {value!r} is not one of {list(names)}: pass a class name or index 0..{len(names) - 1}")
    return out * n if len(out) == 1 else out


def open_index(path: Path, checkpoints_from: Path | None = None, verify: str = "quick"):
    from tracinwe.index import Index
    from tracinwe.index.integrity import VERIFY_MODES

    if verify not in VERIFY_MODES:
        raise TracInWEError(f"--verify {verify}: pass one of {', '.join(VERIFY_MODES)}")
    with stderr.status(literal(f"opening index {path} ...")):
        return Index.open(path, checkpoints_from=checkpoints_from, verify=verify)


def run_training_data(run_dir: Path, data, text_column, label_column, pair_column):
    """``(dataset, max_length)``: the data a run was trained on (recorded by `train`), or ``--data``."""
    from tracinwe.run import run_data

    with stderr.status(literal(f"loading {data or run_dir} ...")):
        dataset, _, max_length = run_data(run_dir, data, text_column, label_column, pair_column)
    return dataset, max_length
