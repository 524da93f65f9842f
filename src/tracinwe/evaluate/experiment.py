"""Evaluation experiments on a real data set, end to end: data, balanced points, per-seed runs, scores, retrains.

This is the orchestration behind ``tracinwe evaluate deletion|lds`` and the
benchmarks. For every seed the full run is trained and scored with *its own*
checkpoints; each retrain is paired with the full run of its seed. Test points
are class-balanced and fixed from the labels before any model is trained.
Retraining noise is measured first (`tracinwe.evaluate.noise`). Every retrain
goes through one `RetrainRunner` per experiment folder, so deletion and LDS
share their full runs and an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.deletion import DEFAULT_KS, run_case_deletion
from tracinwe.evaluate.deletion_report import DeletionResult
from tracinwe.evaluate.lds import LDSResult, run_lds
from tracinwe.evaluate.noise import NOISE_THRESHOLD, measure_noise
from tracinwe.evaluate.points import balanced_points, saturated_count
from tracinwe.evaluate.registry import MethodContext, build_methods as build_registered, check_method_names
from tracinwe.evaluate.retrain import RetrainRunner
from tracinwe.evaluate.run_task import RunFolderTask, RunRecipe, prepare_run_experiment
from tracinwe.io import save_npy_atomic, write_json_atomic
from tracinwe.method import InfluenceMethod
from tracinwe.training.small import SmallModelConfig, SmallRun, SmallTask

#: Methods of the paper's table plus the layer comparison; "random" is also available.
DEFAULT_METHODS = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "Representer", "IF-last", "Grad-Cos-last", "TF-IDF",
                   "TracIn-middle")
#: The middle parameter block compared with the embeddings, per architecture.
MIDDLE_LAYER = {"cnn": "conv1", "cnn-minilm": "conv1", "bert-small": "bert.encoder.layer.0", "minilm-l2": "bert.encoder.layer.0",
                "minilm-l6": "bert.encoder.layer.2"}


@dataclass
class ExperimentSetup:
    """Everything that defines an evaluation run; saved as JSON beside its results."""

    source: str = "bundled:sms-spam"
    text_column: str | None = None  # for files: which columns hold the text and the label
    label_column: str | None = None
    n_train: int = 1500
    n_test_points: int = 12
    n_heldout: int = 500
    test_fraction: float = 0.2
    data_seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    seeds: tuple[int, ...] = (0, 1)
    methods: tuple[str, ...] = DEFAULT_METHODS
    middle_layer: str | None = None
    model: SmallModelConfig | RunRecipe = field(default_factory=SmallModelConfig)  # a RunRecipe: the user's own run
    noise_threshold: float = NOISE_THRESHOLD
    noise_repeats: int = 3
    n_subsets: int = 64
    subset_fraction: float = 0.5

    def __post_init__(self) -> None:
        self.ks, self.seeds, self.methods = tuple(self.ks), tuple(self.seeds), check_method_names(tuple(self.methods))
        if not self.seeds:
            raise TracInWEError("no seeds given: pass at least one, e.g. --seeds 0,1")

    def to_json(self) -> dict:
        out = asdict(self)
        out["model"] = self.model.to_json()
        out["middle_layer"] = self.middle_layer or MIDDLE_LAYER.get(self.model.architecture)
        return out


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


@dataclass(kw_only=True)
class PreparedExperiment(DataSplit):
    """The data split, tensors, the fixed test points and (trained on demand) each seed's full run."""

    setup: ExperimentSetup
    task: SmallTask | RunFolderTask
    points: list[int]  # test points: positions in the held-out set
    tokenizer: object
    runs: dict[int, SmallRun] = field(default_factory=dict)

    @classmethod
    def of(cls, setup: ExperimentSetup, task: SmallTask | RunFolderTask, data: DataSplit, points: list[int],
           tokenizer) -> "PreparedExperiment":
        return cls(**asdict(data), setup=setup, task=task, points=points, tokenizer=tokenizer)

    @property
    def point_texts(self) -> list[str]:
        return [self.heldout_texts[i] for i in self.points]

    @property
    def point_labels(self) -> list[int]:
        return [self.heldout_labels[i] for i in self.points]

    def full_run(self, seed: int) -> SmallRun:
        """The run of ``seed`` on all training rows, with its checkpoints (trained once)."""
        if seed not in self.runs:
            self.runs[seed] = self.task.full_run(seed)
        return self.runs[seed]

    @property
    def run(self) -> SmallRun:
        """The first seed's full run."""
        return self.full_run(self.setup.seeds[0])

    def heldout_accuracy(self, seed: int) -> float:
        probs = self.task.evaluate(self.full_run(seed).model, range(len(self.heldout_texts)))
        return float((probs.argmax(1) == np.asarray(self.heldout_labels)).mean())

    def retrain_recipe(self) -> dict:
        """What fixes a retrain's outcome: data, model and recipe, evaluated rows (not methods or k)."""
        s = self.setup
        return {"source": s.source, "text_column": s.text_column, "label_column": s.label_column, "n_train": s.n_train,
                "n_heldout": s.n_heldout, "test_fraction": s.test_fraction,
                "data_seed": s.data_seed, "model": s.model.to_json(), "eval_rows": self.points}


def load_tokenizer(folder: str | Path | None = None):
    """The MiniLM (BERT uncased) WordPiece tokenizer, offline (or the one saved in ``folder``)."""
    from transformers import AutoTokenizer

    from tracinwe.models.pretrained import minilm_l6_path

    return AutoTokenizer.from_pretrained(folder or minilm_l6_path())


def split_data(setup: ExperimentSetup) -> DataSplit:
    """Load and dedupe the source, split it (stratified, seeded) and sample both sides."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(setup.source, text_column=setup.text_column, label_column=setup.label_column).dedupe()
    train, heldout = data.split(setup.test_fraction, seed=setup.data_seed)
    train, heldout = train.sample(setup.n_train, seed=setup.data_seed), heldout.sample(setup.n_heldout, seed=setup.data_seed)
    return DataSplit(train.texts, train.labels, heldout.texts, heldout.labels, data.label_names)


def prepare_experiment(setup: ExperimentSetup, tokenizer=None, data: DataSplit | None = None) -> PreparedExperiment:
    """Split the data (unless given), tokenize once, fix the class-balanced test points. Trains nothing."""
    tokenizer = tokenizer or load_tokenizer()
    data = data or split_data(setup)
    if max(setup.ks) >= len(data.train_texts):
        raise TracInWEError(f"k up to {max(setup.ks)} but only {len(data.train_texts)} training examples: scale the k grid down")
    setup = replace(setup, model=replace(setup.model, num_classes=len(data.label_names)))
    task = SmallTask.from_texts(setup.model, tokenizer, data.train_texts, data.train_labels, data.heldout_texts,
                                data.heldout_labels)
    points = balanced_points(data.heldout_labels, setup.n_test_points, seed=setup.data_seed)
    return PreparedExperiment.of(setup, task, data, points, tokenizer)


def method_context(prepared: PreparedExperiment, seed: int) -> MethodContext:
    """The checkpoints of ``seed``'s full run, ready for any registered method."""
    config = prepared.setup.model
    models = prepared.task.checkpoint_classifiers(prepared.full_run(seed), prepared.tokenizer)
    return MethodContext(models, prepared.tokenizer, config.max_length, seed,
                         prepared.setup.middle_layer or MIDDLE_LAYER.get(config.architecture, ""))


def build_methods(prepared: PreparedExperiment, names: Sequence[str] | None = None,
                  seed: int | None = None) -> list[InfluenceMethod]:
    """The named methods on the checkpoints of ``seed``'s full run (the first seed by default)."""
    seed = prepared.setup.seeds[0] if seed is None else seed
    return build_registered(names or prepared.setup.methods, method_context(prepared, seed))


def method_scores(prepared: PreparedExperiment, cache_dir: str | Path | None = None, progress: bool = True,
                  seed: int | None = None, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Each method's (n_points, n_train) scores on the gold labels, from ``seed``'s own checkpoints (cached)."""
    from tqdm.auto import tqdm

    seed = prepared.setup.seeds[0] if seed is None else seed
    recipe = hashlib.sha256(json.dumps(prepared.retrain_recipe(), sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / "scores" / f"seed{seed}" if cache_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    out = {}
    names = list(names or prepared.setup.methods)
    for name in tqdm(names, desc=f"influence scores (seed {seed})", unit="method", disable=not progress):
        path = folder / f"{name}.{recipe}.npy" if folder is not None else None
        if path is not None and path.is_file():
            out[name] = np.load(path)
            continue
        method = build_registered([name], method_context(prepared, seed))[0]
        scores = method.scores(prepared.train_texts, prepared.train_labels, prepared.point_texts, prepared.point_labels)
        if path is not None:
            save_npy_atomic(path, scores)
        out[name] = scores
    return out


def scores_by_seed(prepared: PreparedExperiment, cache_dir: str | Path | None, progress: bool = True,
                   names: Sequence[str] | None = None) -> dict[int, dict[str, np.ndarray]]:
    return {s: method_scores(prepared, cache_dir, progress, s, names) for s in prepared.setup.seeds}


def retrain_runner(prepared: PreparedExperiment, cache_dir: str | Path, workers: int = 1) -> RetrainRunner:
    """The experiment folder's one runner: evaluates the test points of every retrain."""
    return RetrainRunner(prepared.task.train, prepared.task.evaluate, len(prepared.train_texts), prepared.points,
                         cache_dir, prepared.retrain_recipe(), workers)


def experiment_info(prepared: PreparedExperiment) -> dict:
    """The setup plus what the data and models turned out to be, per seed (saved beside the results)."""
    seeds = prepared.setup.seeds
    gold = {s: prepared.task.evaluate(prepared.full_run(s).model, prepared.points)[np.arange(len(prepared.points)),
                                                                                  prepared.point_labels].tolist()
            for s in seeds}
    accuracy = {str(s): prepared.heldout_accuracy(s) for s in seeds}
    return {
        "setup": prepared.setup.to_json(),
        "label_names": prepared.label_names,
        "n_train": len(prepared.train_texts),
        "n_heldout": len(prepared.heldout_texts),
        "test_points": prepared.points,
        "test_point_labels": prepared.point_labels,
        "points_per_class": np.bincount(prepared.point_labels, minlength=len(prepared.label_names)).tolist(),
        "heldout_accuracy_by_seed": accuracy,
        "heldout_accuracy": float(np.mean(list(accuracy.values()))),
        "majority_class_rate": float(np.bincount(prepared.heldout_labels).max() / len(prepared.heldout_labels)),
        "test_points_gold_probability_by_seed": {str(s): v for s, v in gold.items()},
        "saturated_points_by_seed": {str(s): saturated_count(v) for s, v in gold.items()},
        "device": prepared.setup.model.run_device,
    }


def run_deletion_experiment(
    setup: ExperimentSetup, cache_dir: str | Path, workers: int = 1, progress: bool = True, tokenizer=None,
    time_limit_s: float | None = None, data: DataSplit | None = None,
) -> tuple[DeletionResult, dict]:
    """Prepare, score every seed's run with its own checkpoints, run (or resume) the retrains."""
    prepared = prepare_experiment(setup, tokenizer, data)
    scores = scores_by_seed(prepared, cache_dir, progress)
    info = experiment_info(prepared)
    result = run_case_deletion(prepared.task.train, prepared.task.evaluate, scores, prepared.points, prepared.point_labels,
                               setup.ks, setup.seeds, cache_dir, workers, config=prepared.retrain_recipe(), progress=progress,
                               time_limit_s=time_limit_s, noise_threshold=setup.noise_threshold,
                               noise_repeats=setup.noise_repeats)
    return result, info


def run_lds_experiment(
    setup: ExperimentSetup, cache_dir: str | Path, workers: int = 1, progress: bool = True, tokenizer=None,
    time_limit_s: float | None = None, data: DataSplit | None = None, run_dir: str | Path | None = None,
    run_test_data: str | None = None,
) -> tuple[LDSResult, dict]:
    """The noise gate (deleting 5% of the data at random), then LDS of every method, per seed.

    With ``run_dir`` (a `tracinwe train` run folder), the methods score the run's own
    checkpoints and every retrain repeats the run's recipe (`run_task`); test points come
    from the run's held-out rows, or from ``run_test_data``.
    """
    if run_dir is not None:
        prepared = prepare_run_experiment(replace(setup, ks=(1,)), run_dir, run_test_data)
    else:
        prepared = prepare_experiment(replace(setup, ks=(1,)), tokenizer, data)
    setup = prepared.setup  # a run folder fixes the seed, the data and the recipe
    runner = retrain_runner(prepared, cache_dir, workers)
    k = max(1, len(prepared.train_texts) // 20)
    noise = measure_noise(runner, range(len(prepared.points)), prepared.point_labels, k, setup.seeds,
                          setup.noise_repeats, setup.noise_threshold, progress=progress)
    if not noise.passed:
        print(f"WARNING: {noise.message()}", file=sys.stderr)
    scores = scores_by_seed(prepared, cache_dir, progress)
    info = {**experiment_info(prepared), "noise_gate": noise.to_json()}
    result = run_lds(runner, scores, range(len(prepared.points)), prepared.point_labels, setup.n_subsets,
                     setup.subset_fraction, setup.data_seed, progress, time_limit_s, settings=info)
    return result, info


def save_result(result: DeletionResult | LDSResult, info: dict, path: str | Path) -> None:
    """Results and their configuration in one JSON file (atomic)."""
    write_json_atomic(Path(path), {"experiment": info, **result.to_json()})
