"""Training checkpoints and their learning rates: the `c` and `eta_c` of TracIn."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tracinwe.errors import CheckpointError
from tracinwe.io import fsync_tree, rename_durably, write_json_atomic
from tracinwe.models.contract import TextClassifier
from tracinwe.models.huggingface import HuggingFaceClassifier

#: Written by `tracinwe train` (and its Trainer callback) beside each checkpoint.
CHECKPOINT_INFO_FILE = "tracinwe_checkpoint.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")


@dataclass
class Checkpoint:
    """One checkpoint: an in-memory classifier or a folder to load lazily, with its learning rate."""

    learning_rate: float
    classifier: TextClassifier | None = None
    path: Path | None = None
    max_length: int = 128
    tokenizer: object | None = None
    task: str = "classification"  # or "causal-lm": how a folder is loaded

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"in-memory model #{id(self.classifier):x}"

    def load(self, device: str = "cpu") -> TextClassifier:
        """The classifier (loading it from disk if it is a folder)."""
        if self.classifier is not None:
            return self.classifier
        assert self.path is not None
        if self.task == "causal-lm":
            from tracinwe.models.causal_lm import load_causal_lm

            return load_causal_lm(self.path, max_length=self.max_length, device=device, tokenizer=self.tokenizer)
        return load_checkpoint_classifier(self.path, tokenizer=self.tokenizer, max_length=self.max_length, device=device)


def check_checkpoint_folder(path: str | Path) -> Path:
    """Raise a one-line `CheckpointError` unless `path` looks like a loadable HF checkpoint."""
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"checkpoint {str(folder)!r} does not exist: check the path")
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint {str(folder)!r} is a file, not a checkpoint folder: pass the folder")
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"checkpoint {str(folder)!r} has no config.json: pass a folder saved by save_pretrained or the HF Trainer")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(
            f"checkpoint {str(folder)!r} has no weights (model.safetensors or pytorch_model.bin): the save was incomplete")
    return folder


def find_tokenizer_folder(checkpoint: Path) -> Path | None:
    """The checkpoint folder if it holds tokenizer files, else its parent run folder if that does."""
    for folder in (checkpoint, checkpoint.parent):
        if any((folder / f).is_file() for f in _TOKENIZER_FILES):
            return folder
    return None


@contextmanager
def hf_progress_bars_hidden() -> Iterator[None]:
    """Hide transformers' own progress bars (weight loading, shards) inside the block, then restore them.

    Their bars are drawn while ours runs; terminals then show stray cursor-up codes (``ESC[A``).
    """
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()


def load_checkpoint_classifier(path: str | Path, tokenizer=None, max_length: int = 128,
                               device: str = "cpu") -> HuggingFaceClassifier:
    """Load an HF sequence classifier and its tokenizer from a checkpoint folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = check_checkpoint_folder(path)
    try:
        with hf_progress_bars_hidden():  # one "Loading weights" bar per checkpoint load drowns our own progress
            model = AutoModelForSequenceClassification.from_pretrained(folder)
    except Exception as exc:  # corrupt weights, wrong config: name the folder, keep the cause
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {str(folder)!r} could not be loaded ({first_line}): re-save it") from exc
    if tokenizer is None:
        tok_folder = find_tokenizer_folder(folder)
        if tok_folder is None:
            raise CheckpointError(f"no tokenizer files in {str(folder)!r} or its parent: pass tokenizer=")
        tokenizer = AutoTokenizer.from_pretrained(tok_folder)
    model.to(device)
    model.eval()
    return HuggingFaceClassifier(model, tokenizer, max_length=max_length)


def read_learning_rate(path: str | Path) -> float:
    """The learning rate in force at a checkpoint, from tracinwe's record or the HF Trainer's state."""
    folder = check_checkpoint_folder(path)
    info = folder / CHECKPOINT_INFO_FILE
    if info.is_file():
        return float(json.loads(info.read_text())["learning_rate"])
    state_file = folder / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(
            f"no learning rate for {str(folder)!r} (no trainer_state.json or {CHECKPOINT_INFO_FILE}): pass learning_rates="
        )
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{str(state_file)!r} is not valid JSON ({exc.msg}): pass learning_rates=") from exc
    step = state.get("global_step", float("inf"))
    logged = [(e.get("step", 0), e["learning_rate"]) for e in state.get("log_history", []) if "learning_rate" in e]
    logged = [(s, lr) for s, lr in logged if s <= step]
    if not logged:
        raise CheckpointError(f"{str(state_file)!r} logs no learning rate up to step {step}: pass learning_rates=")
    return float(max(logged, key=lambda e: e[0])[1])


def write_checkpoint_info(folder: str | Path, learning_rate: float, step: int, epoch: float | None = None) -> None:
    """Record the learning rate beside a checkpoint (atomically)."""
    write_json_atomic(Path(folder) / CHECKPOINT_INFO_FILE, {"learning_rate": learning_rate, "step": step, "epoch": epoch})


def save_checkpoint(model, tokenizer, folder: Path, step: int, lr: float, epoch: float) -> Path:
    """Write ``folder/checkpoint-STEP`` (weights, tokenizer, learning rate) atomically: temporary folder, fsync, rename."""
    final = folder / f"checkpoint-{step}"
    tmp = folder / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with hf_progress_bars_hidden():
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_checkpoint_info(tmp, learning_rate=lr, step=step, epoch=epoch)
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    rename_durably(tmp, final)
    return final
