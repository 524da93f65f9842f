"""Retraining the user's own `tracinwe train` run: the task behind ``tracinwe evaluate lds --run-dir``.

The methods score with the run's own checkpoints; every retrain fine-tunes the
run's base model with the run's recorded recipe (seed, optimizer, learning
rate, epochs, max length) on a subset of the run's training rows, in the run's
example order restricted to that subset. So LDS and the noise gate measure the
model the user trained, not a proxy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from tracinwe.errors import TracInWEError
from tracinwe.training.small import SmallRun

#: Fewer held-out rows than this cannot give balanced test points and an accuracy worth printing.
MIN_HELDOUT = 20


@dataclass(frozen=True)
class RunRecipe:
    """What fixes a retrain of a run: the base model, the recorded settings, the classes, the rows."""

    run_dir: str
    base_model: str
    settings: dict = field(default_factory=dict)  # `TrainConfig` fields, as `tracinwe train` recorded them
    label_names: tuple[str, ...] = ()
    data_digest: str = ""  # of the training texts and labels, so a changed data file is never read from the cache
    architecture: str = "run-dir"
    device: str = "cpu"

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def max_length(self) -> int:
        return int(self.settings.get("max_length", 128))

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", 0))

    @property
    def run_device(self) -> str:
        return self.device

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RunFolderTask:
    """The harness's ``train_fn``/``eval_fn`` for a run folder (picklable, for worker processes)."""

    recipe: RunRecipe
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]

    @cached_property
    def tokenizer(self):
        from tracinwe.run import base_tokenizer

        return base_tokenizer(self.recipe.base_model)

    def fresh_model(self, seed: int) -> torch.nn.Module:
        """The base model with a new head, seeded exactly as `tracinwe train` seeds it."""
        from tracinwe.run import fresh_classifier

        return fresh_classifier(self.recipe.base_model, self.recipe.label_names, seed)

    def train(self, train_indices: Sequence[int], seed: int,
              masked_tokens: Mapping[int, Sequence[int]] | None = None) -> torch.nn.Module:
        """The run's recipe on the rows ``train_indices``, under ``seed``."""
        from tracinwe.training import TrainConfig, train_classifier

        if masked_tokens:
            raise TracInWEError("masking retrains are not available for a run folder: use deletion")
        model = self.fresh_model(seed)
        config = TrainConfig(**{**self.recipe.settings, "seed": seed})
        train_classifier(model, self.tokenizer, self.train_texts, self.train_labels, None, config, progress=False,
                         rows=list(train_indices))
        return model

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, test_indices: Sequence[int], batch_size: int = 64) -> np.ndarray:
        """Class probabilities (len(test_indices), C) of the held-out rows."""
        model.eval()
        rows = [int(i) for i in test_indices]
        out = []
        for b in range(0, len(rows), batch_size):
            enc = self.tokenizer([self.test_texts[i] for i in rows[b:b + batch_size]], padding=True, truncation=True,
                                 max_length=self.recipe.max_length, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), -1))
        if not out:
            return np.zeros((0, self.recipe.num_classes))
        return torch.cat(out).numpy().astype(np.float64)

    def full_run(self, seed: int) -> SmallRun:
        """The user's run itself: its last checkpoint as the model, every checkpoint with its learning rate."""
        from tracinwe.models.checkpoints import load_checkpoint_classifier, read_learning_rate
        from tracinwe.run import checkpoint_folders

        if seed != self.recipe.seed:
            raise TracInWEError(f"the run in {self.recipe.run_dir!r} was trained with seed {self.recipe.seed}, "
                                f"not {seed}: evaluate it with its own seed")
        folders = checkpoint_folders(self.recipe.run_dir)
        last = load_checkpoint_classifier(folders[-1], max_length=self.recipe.max_length).module
        return SmallRun(last, [(str(p), read_learning_rate(p)) for p in folders])

    def checkpoint_classifiers(self, run: SmallRun, tokenizer) -> list[tuple[torch.nn.Module, float]]:
        """``[(model, lr), ...]`` of the run's checkpoint folders, for TracInWE and the baselines."""
        from tracinwe.models.checkpoints import load_checkpoint_classifier

        return [(load_checkpoint_classifier(path, tokenizer, self.recipe.max_length).module, lr)
                for path, lr in run.checkpoints]


def _digest(texts: Sequence[str], labels: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps([list(texts), [int(y) for y in labels]]).encode()).hexdigest()[:16]


def prepare_run_experiment(setup, run_dir: str | Path, data: str | None = None):
    """A `PreparedExperiment` on a run folder: its training rows, held-out rows of its data, its recipe.

    Test points are drawn (class-balanced) from the rows of the run's data it was not
    trained on, or from ``data`` when given (e.g. a separate test file).
    """
    from tracinwe.evaluate.experiment import DataSplit, PreparedExperiment
    from tracinwe.evaluate.points import balanced_points
    from tracinwe.models.checkpoints import find_tokenizer_folder
    from tracinwe.run import checkpoint_folders, read_run_info, run_data, with_label_names

    info = read_run_info(run_dir)
    if not info.get("model") or not info.get("settings"):
        raise TracInWEError(f"{str(run_dir)!r} has no record of its training (tracinwe_run.json): "
                            "--run-dir needs a run trained by `tracinwe train`")
    train, rest, _ = run_data(run_dir)
    if data is not None:
        from tracinwe.data import load_dataset_source

        rest = with_label_names(load_dataset_source(data, text_column=setup.text_column, label_column=setup.label_column)
                                .validate().dedupe(), info["label_names"], data, owner="the run")
    if train.text_pairs is not None:
        raise TracInWEError("the run was trained on sentence pairs: evaluate lds --run-dir takes single-text runs")
    heldout = rest.sample(setup.n_heldout, seed=setup.data_seed)
    if len(heldout) < MIN_HELDOUT:
        raise TracInWEError(f"only {len(heldout)} rows of the run's data were held out: train with --holdout 0.2, "
                            "or pass --data with labelled rows the run was not trained on")
    recipe = RunRecipe(str(Path(run_dir).resolve()), str(info["model"]), dict(info["settings"]),
                       tuple(str(n) for n in train.label_names), _digest(train.texts, train.labels))
    split = DataSplit(train.texts, train.labels, heldout.texts, heldout.labels, list(train.label_names))
    task = RunFolderTask(recipe, split.train_texts, split.train_labels, split.heldout_texts, split.heldout_labels)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(find_tokenizer_folder(checkpoint_folders(run_dir)[-1]))
    setup = replace(setup, source=str(info.get("data", setup.source)), n_train=len(train), seeds=(recipe.seed,),
                    model=recipe)
    points = balanced_points(split.heldout_labels, setup.n_test_points, seed=setup.data_seed)
    return PreparedExperiment.of(setup, task, split, points, tokenizer)
