"""A `tracinwe train` run folder: its record (``tracinwe_run.json``), its checkpoints and its data.

The one place that knows the folder's layout. `train_run` writes a run (``tracinwe
train`` and the demo); the CLI (explain, index build, evaluate lds --run-dir) and
the demo read runs through the functions below it. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from tracinwe.errors import CheckpointError, LabelError, TracInWEError
from tracinwe.io import write_json_atomic

RUN_INFO_FILE = "tracinwe_run.json"
#: Held-out rows predicted to report the accuracy of a new run.
HELDOUT_SCORED = 500

# -- writing a run -------------------------------------------------------------------------------


def check_run_folder(out: str | Path, overwrite: bool = False) -> None:
    """Refuse a non-empty run folder unless ``overwrite`` (old and new checkpoints would mix)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TracInWEError(f"--out {str(out)!r} is a file: pass a folder for the run")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TracInWEError(f"--out {str(out)!r} is not empty (an earlier run?): "
                            "pass a new folder, or --overwrite to replace its checkpoints")


def clear_old_run(out: str | Path) -> None:
    """Delete an earlier run's checkpoints and records from ``out`` (other files stay)."""
    out = Path(out)
    if not out.is_dir():
        return
    for path in out.iterdir():
        if path.is_dir() and (path.name.startswith("checkpoint-") or path.name.startswith(".checkpoint-")):
            shutil.rmtree(path)
        elif path.name in (RUN_INFO_FILE, RUN_INFO_FILE + ".tmp", "train_config.json"):
            path.unlink()


def recorded_source(data: str) -> str:
    """``data`` as the run records it: a local file or folder as its absolute path, other names as given."""
    from tracinwe.data.sources import describe_source_kind

    if describe_source_kind(data) in ("file", "hf-disk"):
        return str(Path(data).expanduser().resolve())
    return data


def fresh_classifier(model: str, label_names: Sequence[str], seed: int):
    """``model`` (bundled:NAME, a folder or a hub id) with a new head for ``label_names``, seeded with ``seed``."""
    import torch
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from tracinwe.models.checkpoints import hf_progress_bars_hidden
    from tracinwe.models.pretrained import resolve_model_name

    names = list(label_names)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier.* newly initialised" report is expected here
    try:
        torch.manual_seed(seed)
        with hf_progress_bars_hidden():
            return AutoModelForSequenceClassification.from_pretrained(
                resolve_model_name(model), num_labels=len(names), id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True)
    except OSError as exc:
        raise TracInWEError(f"model {model!r} could not be loaded ({(str(exc).splitlines() or [''])[0]}): "
                            "pass bundled:minilm-l6, a local HF folder, or a hub id (needs internet)") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def base_tokenizer(model: str):
    """The tokenizer of a base model (bundled:NAME, a folder or a hub id)."""
    from transformers import AutoTokenizer

    from tracinwe.models.pretrained import resolve_model_name

    try:
        return AutoTokenizer.from_pretrained(resolve_model_name(model))
    except OSError as exc:
        raise TracInWEError(f"model {model!r} could not be loaded ({(str(exc).splitlines() or [''])[0]}): "
                            "pass bundled:minilm-l6, a local HF folder, or a hub id (needs internet)") from None


def train_run(out: str | Path, model: str, train_set, config, *, heldout=None, data: str | None = None,
              columns: dict | None = None, overwrite: bool = False, progress: bool = True,
              status: Callable[[str], AbstractContextManager] | None = None) -> dict:
    """Fine-tune ``model`` on ``train_set`` into the run folder ``out`` and record the run; return its summary.

    ``config`` is a `tracinwe.training.TrainConfig`. The folder gets ``checkpoint-STEP``
    folders (weights, tokenizer, learning rate) and ``tracinwe_run.json``: the base
    model, the data source (``data``, a local path made absolute) and ``columns``, the
    training rows' ids, the label names and the settings, so the run can be read back
    (`run_data`) and retrained (``evaluate lds --run-dir``). An earlier run in ``out``
    is refused unless ``overwrite``. With ``heldout``, up to 500 of its rows are predicted
    for the summary's ``heldout_accuracy``. ``status(message)`` shows what is running.
    """
    import numpy as np

    from tracinwe.models.checkpoints import hf_progress_bars_hidden
    from tracinwe.tracin import TracInWE
    from tracinwe.training import train_classifier

    out = Path(out)
    status = status or (lambda message: nullcontext())
    check_run_folder(out, overwrite)
    names = list(train_set.label_names)
    with status(f"loading {model} ..."):
        tokenizer = base_tokenizer(model)
        net = fresh_classifier(model, names, config.seed)
    clear_old_run(out)
    with hf_progress_bars_hidden():
        run = train_classifier(net, tokenizer, train_set.texts, train_set.labels, out, config, train_set.text_pairs,
                               progress=progress)
    accuracy, scored = None, 0
    if heldout is not None and len(heldout):
        probe = heldout.sample(min(len(heldout), HELDOUT_SCORED), seed=config.seed)
        tw = TracInWE.from_checkpoints(run.checkpoints[-1:], max_length=config.max_length)
        with status(f"predicting {len(probe)} held-out examples ..."):
            probs = tw.predict(probe.texts, probe.text_pairs)
        accuracy, scored = float((probs.argmax(1) == np.asarray(probe.labels)).mean()), len(probe)
    summary = {
        "run_dir": str(out), "model": model, "data": None if data is None else recorded_source(data),
        "columns": dict(columns or {}), "label_names": names, "n_train": len(train_set),
        "checkpoints": [str(p) for p in run.checkpoints], "learning_rates": run.learning_rates,
        "final_loss": float(np.mean(run.losses[-20:])) if run.losses else float("nan"),
        "heldout_accuracy": accuracy, "n_heldout_scored": scored, "settings": dataclasses.asdict(config),
        "train_ids": list(train_set.ids),
    }
    write_json_atomic(out / RUN_INFO_FILE, summary)
    return {k: v for k, v in summary.items() if k != "train_ids"}


# -- reading a run -------------------------------------------------------------------------------


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
