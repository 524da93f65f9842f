"""A `tracinwe train` run folder: its record (``tracinwe_run.json``), its checkpoints and its data.

The one place that knows the folder's layout: the CLI (explain, index build,
evaluate lds --run-dir) and the demo read runs through it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from tracinwe.errors import CheckpointError, LabelError, TracInWEError

RUN_INFO_FILE = "tracinwe_run.json"


def read_run_info(run_dir: str | Path) -> dict:
    """The run's record, or ``{}`` for a folder of checkpoints that `tracinwe train` did not write."""
    info_file = Path(run_dir) / RUN_INFO_FILE
    if not info_file.is_file():
        return {}
    try:
        return json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{str(info_file)!r} is not valid JSON ({exc}): train the run again") from None


def checkpoint_step(folder: Path) -> int | None:
    """The step of a ``checkpoint-STEP`` folder, or None for any other name."""
    tail = folder.name.removeprefix("checkpoint-")
    return int(tail) if folder.name.startswith("checkpoint-") and tail.isdigit() else None


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """The run's ``checkpoint-STEP`` folders, oldest first."""
    run_dir = Path(run_dir)
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and checkpoint_step(p) is not None]
    if not found:
        raise TracInWEError(f"no checkpoint-* folders in {str(run_dir)!r}: pass the --out folder of `tracinwe train`")
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def with_label_names(dataset, names: Sequence[str], source: str, owner: str = "the index"):
    """`dataset` with its labels as indices into ``names`` (the classes of the index or run), checked.

    Labels match by name; labels that are plain class numbers (names ``"0"``,
    ``"1"``, ...) are used as indices. A label ``names`` lacks is a `LabelError`
    naming the known labels, never a silent re-mapping.
    """
    names = [str(n) for n in names]
    position = {n: i for i, n in enumerate(names)}
    mapping: dict[int, int] = {}
    for label in sorted(set(dataset.labels)):
        name = str(dataset.label_names[label])
        if name in position:
            mapping[label] = position[name]
        elif name.isdigit() and int(name) < len(names) and all(n.isdigit() for n in dataset.label_names):
            mapping[label] = int(name)
        else:
            raise LabelError(f"label {name!r} in {source} is not one {owner} knows ({', '.join(names)}): "
                             "pass data labelled with these classes")
    return dataclasses.replace(dataset, labels=[mapping[y] for y in dataset.labels], label_names=names)


def run_data(run_dir: str | Path, data: str | None = None, text_column: str | None = None,
             label_column: str | None = None, pair_column: str | None = None, split: str = "train"):
    """``(training rows, every other row of the source, max_length)`` of a run.

    The training rows are the ones the run recorded (``train_ids``), in its order,
    when the run's own data is used; with ``data`` given, all of ``data`` (and no
    other rows). Labels are mapped onto the run's classes by name.
    """
    from tracinwe.data import load_dataset_source

    info = read_run_info(run_dir)
    source = data or info.get("data")
    if source is None:
        raise TracInWEError(f"no training data recorded in {str(run_dir)!r}: pass --data (the data the run was trained on)")
    if data is None:  # the data and columns the run was trained on
        recorded = info.get("columns", {})
        text_column, label_column, pair_column = (recorded.get(c) for c in ("text_column", "label_column", "text_pair_column"))
    dataset = load_dataset_source(source, split=split, text_column=text_column, label_column=label_column,
                                  text_pair_column=pair_column).validate()
    rest = dataset.subset([])
    if data is None and info.get("train_ids"):
        dataset = dataset.dedupe()
        where = {rid: i for i, rid in enumerate(dataset.ids)}
        train_rows = [where[r] for r in info["train_ids"] if r in where]
        chosen = set(train_rows)
        rest = dataset.subset([i for i in range(len(dataset)) if i not in chosen])
        dataset = dataset.subset(train_rows)
    if info.get("label_names"):  # the classes of the run's model, whatever order the data names them in
        dataset = with_label_names(dataset, info["label_names"], str(source), owner="the run")
        rest = with_label_names(rest, info["label_names"], str(source), owner="the run")
    return dataset, rest, int(info.get("settings", {}).get("max_length", 128))
