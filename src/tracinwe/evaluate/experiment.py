"""A case-deletion experiment on a real data set, end to end: data, model, methods, scores, retrains.

This is the orchestration behind ``tracinwe evaluate deletion`` and
``benchmarks/bench_deletion.py``; the protocol itself is `run_case_deletion`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines import (
    GradCosLastLayer,
    InfluenceFunctionLastLayer,
    InfluenceMethod,
    RandomInfluence,
    RepresenterPoints,
    TfIdfVariant,
    TracInLastLayer,
    TracInLayer,
    TracInWEMethod,
)
from tracinwe.evaluate.deletion import DEFAULT_KS, run_case_deletion, write_json_atomic
from tracinwe.evaluate.deletion_report import DeletionResult
from tracinwe.evaluate.small_training import SmallModelConfig, SmallRun, SmallTask, as_classifier, checkpoint_models

#: Methods of the paper's table plus the layer comparison; "random" is also available.
DEFAULT_METHODS = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "Representer", "IF-last", "Grad-Cos-last", "TF-IDF", "TracIn-middle")
KNOWN_METHODS = DEFAULT_METHODS + ("random",)
#: The middle parameter block compared with the embeddings, per architecture.
MIDDLE_LAYER = {"cnn": "conv1", "bert-small": "bert.encoder.layer.0"}


@dataclass
class ExperimentSetup:
    """Everything that defines a case-deletion run; saved as JSON beside its results."""

    source: str = "bundled:sms-spam"
    n_train: int = 1500
    n_test_points: int = 12
    n_heldout: int = 500
    test_fraction: float = 0.2
    data_seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = DEFAULT_METHODS
    middle_layer: str | None = None
    model: SmallModelConfig = field(default_factory=SmallModelConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in KNOWN_METHODS and not m.startswith("TracIn-WE-Top")]
        if unknown:
            raise TracInWEError(f"unknown methods {unknown}: pick from {list(KNOWN_METHODS)} (or TracIn-WE-Top<k>)")
        self.ks, self.seeds, self.methods = tuple(self.ks), tuple(self.seeds), tuple(self.methods)

    def to_json(self) -> dict:
        out = asdict(self)
        out["model"] = self.model.to_json()
        out["middle_layer"] = self.middle_layer or MIDDLE_LAYER[self.model.architecture]
        return out


@dataclass
class PreparedExperiment:
    """Data, tensors and the full-data run whose checkpoints the methods use."""

    setup: ExperimentSetup
    task: SmallTask
    train_texts: list[str]
    train_labels: list[int]
    heldout_texts: list[str]
    heldout_labels: list[int]
    points: list[int]  # test points: positions in the held-out set
    label_names: list[str]
    run: SmallRun
    tokenizer: object

    @property
    def point_texts(self) -> list[str]:
        return [self.heldout_texts[i] for i in self.points]

    @property
    def point_labels(self) -> list[int]:
        return [self.heldout_labels[i] for i in self.points]

    def heldout_accuracy(self) -> float:
        probs = self.task.evaluate(self.run.model, range(len(self.heldout_texts)))
        return float((probs.argmax(1) == np.asarray(self.heldout_labels)).mean())


def load_tokenizer(folder: str | Path | None = None):
    """The MiniLM (BERT uncased) WordPiece tokenizer, offline (or the one saved in ``folder``)."""
    from transformers import AutoTokenizer

    from tracinwe.models.pretrained import minilm_l6_path

    return AutoTokenizer.from_pretrained(folder or minilm_l6_path())


@dataclass
class DataSplit:
    """The texts of an experiment: the training sample and the held-out sample (JSON-serialisable)."""

    train_texts: list[str]
    train_labels: list[int]
    heldout_texts: list[str]
    heldout_labels: list[int]
    label_names: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def split_data(setup: ExperimentSetup) -> DataSplit:
    """Load and dedupe the source, split it (stratified, seeded) and sample both sides."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(setup.source).dedupe()
    train, heldout = data.split(setup.test_fraction, seed=setup.data_seed)
    train, heldout = train.sample(setup.n_train, seed=setup.data_seed), heldout.sample(setup.n_heldout, seed=setup.data_seed)
    return DataSplit(train.texts, train.labels, heldout.texts, heldout.labels, data.label_names)


def prepare_experiment(setup: ExperimentSetup, tokenizer=None, data: DataSplit | None = None) -> PreparedExperiment:
    """Split the data (unless given); tokenize once; train the full run of the first seed."""
    tokenizer = tokenizer or load_tokenizer()
    data = data or split_data(setup)
    if setup.n_test_points > len(data.heldout_texts):
        raise TracInWEError(f"{setup.n_test_points} test points but only {len(data.heldout_texts)} held-out examples: ask for fewer")
    if max(setup.ks) >= len(data.train_texts):
        raise TracInWEError(f"k up to {max(setup.ks)} but only {len(data.train_texts)} training examples: scale the k grid down")
    config = replace(setup.model, num_classes=len(data.label_names))
    setup.model = config
    task = SmallTask.from_texts(config, tokenizer, data.train_texts, data.train_labels, data.heldout_texts, data.heldout_labels)
    rng = np.random.default_rng([setup.data_seed, 7])
    points = sorted(int(i) for i in rng.choice(len(data.heldout_texts), size=setup.n_test_points, replace=False))
    run = task.full_run(setup.seeds[0])
    return PreparedExperiment(setup, task, list(data.train_texts), list(data.train_labels), list(data.heldout_texts),
                              list(data.heldout_labels), points, list(data.label_names), run, tokenizer)


def build_methods(prepared: PreparedExperiment, names: Sequence[str] | None = None) -> list[InfluenceMethod]:
    """The named methods, all on the checkpoints of the prepared full run."""
    setup, config = prepared.setup, prepared.setup.model
    models = [(as_classifier(m, prepared.tokenizer, config.max_length), lr) for m, lr in checkpoint_models(config, prepared.run)]
    common = dict(tokenizer=prepared.tokenizer, max_length=config.max_length)
    middle = setup.middle_layer or MIDDLE_LAYER[config.architecture]
    out: list[InfluenceMethod] = []
    for name in names or setup.methods:
        if name == "TracIn-WE":
            out.append(TracInWEMethod.from_models(models, batch_size=64, **common))
        elif name.startswith("TracIn-WE-Top"):
            out.append(TracInWEMethod.from_models(models, top_k=int(name.removeprefix("TracIn-WE-Top")), batch_size=64, **common))
        elif name == "TracIn-middle":
            method = TracInLayer(middle, models, **common)
            method.name = "TracIn-middle"
            out.append(method)
        else:
            cls = {"TracIn-last": TracInLastLayer, "Representer": RepresenterPoints, "IF-last": InfluenceFunctionLastLayer,
                   "Grad-Cos-last": GradCosLastLayer, "TF-IDF": TfIdfVariant}.get(name)
            out.append(RandomInfluence(seed=setup.data_seed) if name == "random" else cls(models, **common))
    return out


def method_scores(prepared: PreparedExperiment, cache_dir: str | Path | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Every method's (n_points, n_train) scores on the gold labels, cached as ``scores/<name>.npy``."""
    from tqdm.auto import tqdm

    recipe = _recipe(prepared.setup)
    folder = Path(cache_dir) / "scores" if cache_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for method in tqdm(build_methods(prepared), desc="influence scores", unit="method", disable=not progress):
        path = folder / f"{method.name}.{recipe}.npy" if folder is not None else None
        if path is not None and path.is_file():
            out[method.name] = np.load(path)
            continue
        scores = method.scores(prepared.train_texts, prepared.train_labels, prepared.point_texts, prepared.point_labels)
        if path is not None:
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, scores)
            tmp.replace(path)
        out[method.name] = scores
    return out


def _recipe(setup: ExperimentSetup) -> str:
    return hashlib.sha256(json.dumps(setup.to_json(), sort_keys=True).encode()).hexdigest()[:12]


def run_deletion_experiment(
    setup: ExperimentSetup, cache_dir: str | Path, workers: int = 1, progress: bool = True, tokenizer=None,
) -> tuple[DeletionResult, dict]:
    """Prepare, score, run (or resume) the retrains; returns the result and the run's description."""
    prepared = prepare_experiment(setup, tokenizer)
    scores = method_scores(prepared, cache_dir, progress)
    info = experiment_info(prepared)
    result = run_case_deletion(prepared.task.train, prepared.task.evaluate, scores, prepared.points, prepared.point_labels,
                               setup.ks, setup.seeds, cache_dir, workers, config=info, progress=progress)
    return result, info


def experiment_info(prepared: PreparedExperiment) -> dict:
    """The setup plus what the data and model turned out to be (saved beside the results)."""
    probs = prepared.task.evaluate(prepared.run.model, prepared.points)
    return {
        "setup": prepared.setup.to_json(),
        "label_names": prepared.label_names,
        "n_train": len(prepared.train_texts),
        "n_heldout": len(prepared.heldout_texts),
        "heldout_accuracy_seed0": prepared.heldout_accuracy(),
        "test_points_gold_probability_seed0": probs[np.arange(len(prepared.points)), prepared.point_labels].tolist(),
        "device": prepared.setup.model.run_device,
    }


def save_result(result: DeletionResult, info: dict, path: str | Path) -> None:
    """Results and their configuration in one JSON file (atomic)."""
    write_json_atomic(Path(path), {"experiment": info, **result.to_json()})
