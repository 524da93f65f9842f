"""Mislabel detection by self-influence: flip a seeded share of labels, train, rank, measure.

A training example whose label is wrong keeps a large loss gradient while the
rest of its class pulls the model the other way, so it tends to have a large
self-influence ``sum_c lr_c ||grad loss(z; c)||^2``. The evaluation flips
``fraction`` of a real data set's labels, trains a small model on the noisy
labels (SGD + momentum, several checkpoints), ranks the training examples by
each method's self-influence and reports the detection ROC AUC and the share
of flipped labels found in the top 10% / 20% of the ranking. Where the data
carries an annotator ``confidence`` column (the crowd-labelled Twitter set),
it also relates self-influence to that confidence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tracinwe.data import TextDataset
from tracinwe.errors import TracInWEError
from tracinwe.training.small import SmallModelConfig

METHODS = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "TracIn-middle", "loss", "random")
TOP_FRACTIONS = (0.1, 0.2)


# -- the noise -------------------------------------------------------------------------------


@dataclass
class FlippedLabels:
    """A copy of a data set with some labels replaced by another class."""

    dataset: TextDataset  # the noisy copy
    flipped: np.ndarray  # (n,) bool: whose label was changed
    original_labels: np.ndarray  # (n,) the labels before flipping


def flip_labels(dataset: TextDataset, fraction: float = 0.1, seed: int = 0) -> FlippedLabels:
    """Flip ``round(fraction * n)`` labels, chosen with ``seed``, each to a uniformly drawn other class."""
    if not 0.0 <= fraction < 1.0:
        raise TracInWEError(f"flip fraction must be in [0, 1), got {fraction}: pass e.g. 0.1 for 10%")
    if dataset.num_labels < 2:
        raise TracInWEError(f"{dataset.name or 'the data'} has {dataset.num_labels} class: flipping needs at least 2")
    n = len(dataset)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(n, size=int(round(fraction * n)), replace=False)
    original = np.asarray(dataset.labels, dtype=np.int64)
    noisy = original.copy()
    shift = rng.integers(1, dataset.num_labels, size=chosen.size)  # never 0: always another class
    noisy[chosen] = (original[chosen] + shift) % dataset.num_labels
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    out = dataset.copy()
    out.labels = noisy.tolist()
    return FlippedLabels(out, flipped, original)


# -- the metrics (pure numpy) ----------------------------------------------------------------


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks in ascending order; tied values share the mean of their ranks."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.size]
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0  # mean of ranks lo+1 .. hi
    return ranks


def detection_auc(scores: Sequence[float], positives: Sequence[bool]) -> float:
    """ROC AUC of ranking ``positives`` above the rest by ``scores`` (ties count half): Mann-Whitney U."""
    pos = np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise TracInWEError("detection AUC needs both flipped and clean examples: flip a fraction between 0 and 1")
    ranks = average_ranks(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def share_found(scores: Sequence[float], positives: Sequence[bool], top_fraction: float) -> float:
    """Share of the positives among the ``ceil(top_fraction * n)`` highest scores (ties broken by index)."""
    pos = np.asarray(positives, dtype=bool)
    if not pos.any():
        raise TracInWEError("no flipped examples to find")
    k = int(math.ceil(top_fraction * pos.size))
    top = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")[:k]
    return float(pos[top].sum() / pos.sum())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else math.nan


@dataclass
class DetectionScore:
    """How well one method's self-influence ranks the flipped labels first."""

    method: str
    auc: float
    found: dict[str, float]  # "top 10%" -> share of flipped labels found there
    seconds: float


@dataclass
class ConfidenceRelation:
    """Self-influence against the annotators' confidence in each label."""

    method: str
    n: int
    spearman: float  # < 0: higher self-influence goes with less confident labels
    mean_confidence_top_decile: float
    mean_confidence_rest: float


def detection_score(method: str, scores: np.ndarray, flipped: np.ndarray, seconds: float = 0.0) -> DetectionScore:
    found = {f"top {round(100 * f)}%": share_found(scores, flipped, f) for f in TOP_FRACTIONS}
    return DetectionScore(method, detection_auc(scores, flipped), found, seconds)


def confidence_relation(method: str, scores: Sequence[float], confidence: Sequence[float]) -> ConfidenceRelation:
    """Spearman correlation and top-decile mean confidence, over the rows with a finite confidence."""
    s, c = np.asarray(scores, dtype=np.float64), np.asarray(confidence, dtype=np.float64)
    keep = np.isfinite(c)
    s, c = s[keep], c[keep]
    if s.size < 10:
        raise TracInWEError(f"only {s.size} rows have a confidence value: need at least 10")
    top = np.zeros(s.size, dtype=bool)
    top[np.argsort(-s, kind="mergesort")[: int(math.ceil(0.1 * s.size))]] = True
    return ConfidenceRelation(method, int(s.size), spearman(s, c), float(c[top].mean()), float(c[~top].mean()))


# -- the experiment --------------------------------------------------------------------------


@dataclass
class MislabelSetup:
    """Everything that defines a mislabel-detection run; saved as JSON beside its results."""

    source: str = "bundled:sms-spam"
    n: int = 3000
    flip_fraction: float = 0.1
    seed: int = 0  # data sample, flips, initialisation and example order
    n_heldout: int = 500
    methods: tuple[str, ...] = METHODS
    middle_layer: str | None = None  # default: conv1 (CNN) / bert.encoder.layer.0 (BERT-small)
    model: SmallModelConfig = field(default_factory=SmallModelConfig)

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        unknown = [m for m in self.methods if m not in METHODS and not m.startswith("TracIn-WE-Top")]
        if unknown:
            raise TracInWEError(f"unknown methods {unknown}: pick from {list(METHODS)} (or TracIn-WE-Top<k>)")

    def to_json(self) -> dict:
        out = asdict(self)
        out["model"] = self.model.to_json()
        return out


@dataclass
class MislabelReport:
    """Detection scores per method, the confidence relation where the data has one, and the training summary."""

    setup: MislabelSetup
    detection: list[DetectionScore]
    confidence: list[ConfidenceRelation]
    training: dict
    #: method -> Spearman correlation of its self-influence with the text's token count
    length_spearman: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format_version": 1,
            "setup": self.setup.to_json(),
            "training": self.training,
            "detection": [asdict(d) for d in self.detection],
            "confidence": [asdict(c) for c in self.confidence],
            "length_spearman": self.length_spearman,
        }

    def save(self, path: str | Path) -> Path:
        from tracinwe.io import write_json_atomic

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_json())
        return path

    def table(self, title: str | None = None):
        """A rich table: one row per method."""
        from rich.table import Table

        s, t = self.setup, self.training
        table = Table(title=title or (
            f"{s.source}: {t['n_train']} training texts, {t['n_flipped']} labels flipped (seed {s.seed}); "
            f"{s.model.architecture}, train acc. on noisy labels {t['train_accuracy_noisy']:.2f}, "
            + (f"flipped memorised {t['flipped_memorised']:.2f}, " if t["flipped_memorised"] is not None else "")
            + f"held-out acc. {t['heldout_accuracy']:.2f}"
        ))
        conf = {c.method: c for c in self.confidence}
        table.add_column("method")
        if self.detection:
            for col in ("AUC", *self.detection[0].found, "seconds"):
                table.add_column(col, justify="right")
        if conf:
            for col in ("Spearman(SI, confidence)", "conf. top 10% SI", "conf. rest"):
                table.add_column(col, justify="right")
        table.add_column("Spearman(SI, length)", justify="right")
        names = [d.method for d in self.detection] or [c.method for c in self.confidence]
        by_name = {d.method: d for d in self.detection}
        for name in names:
            row = [name]
            if name in by_name:
                d = by_name[name]
                row += [f"{d.auc:.3f}", *(f"{v:.3f}" for v in d.found.values()), f"{d.seconds:.1f}"]
            if name in conf:
                c = conf[name]
                row += [f"{c.spearman:+.3f}", f"{c.mean_confidence_top_decile:.3f}", f"{c.mean_confidence_rest:.3f}"]
            row.append(f"{self.length_spearman[name]:+.3f}" if name in self.length_spearman else "")
            table.add_row(*row)
        return table


def self_influence_methods(models, tokenizer, names: Sequence[str], config: SmallModelConfig,
                           middle_layer: str | None = None, seed: int = 0) -> list:
    """The named methods on ``[(model, lr), ...]``, from the one registry (`tracinwe.evaluate.registry`)."""
    from tracinwe.evaluate.experiment import MIDDLE_LAYER
    from tracinwe.evaluate.registry import MethodContext, build_methods

    ctx = MethodContext(models, tokenizer, config.max_length, seed, middle_layer or MIDDLE_LAYER[config.architecture])
    return build_methods(names, ctx)


def sample_data(setup: MislabelSetup, data: TextDataset | None = None) -> TextDataset:
    """The de-duplicated, stratified sample of ``n + n_heldout`` rows the run uses.

    Rows without a finite annotator confidence are dropped where the data has that column.
    """
    from tracinwe.data import load_dataset_source

    data = (data if data is not None else load_dataset_source(setup.source)).dedupe()
    if "confidence" in data.extra:
        data = data.subset([i for i, c in enumerate(data.extra["confidence"]) if c is not None and math.isfinite(c)])
    return data.sample(setup.n + setup.n_heldout, seed=setup.seed)


def run_mislabel_detection(setup: MislabelSetup, tokenizer=None, data: TextDataset | None = None,
                           progress: bool = True) -> MislabelReport:
    """Sample, flip, train on the noisy labels, rank by each method's self-influence, measure.

    ``data`` replaces loading ``setup.source`` (it is still de-duplicated and sampled).
    """
    import torch

    from tracinwe.evaluate.experiment import load_tokenizer
    from tracinwe.training.small import (
        TokenizedTexts,
        as_classifier,
        checkpoint_models,
        predict_small,
        train_small,
    )

    tokenizer = tokenizer or load_tokenizer()
    data = sample_data(setup, data)
    if setup.n_heldout < 1 or len(data) <= setup.n_heldout + 10:
        raise TracInWEError(f"{len(data)} rows cannot give {setup.n_heldout} held-out rows and a training set: lower n_heldout")
    if setup.flip_fraction == 0 and "confidence" not in data.extra:
        raise TracInWEError(f"nothing to measure: {setup.source} has no confidence column and no labels are flipped; "
                            "pass a flip fraction > 0")
    train, heldout = data.split(setup.n_heldout / len(data), seed=setup.seed)
    noisy = flip_labels(train, setup.flip_fraction, setup.seed)
    config = replace(setup.model, num_classes=data.num_labels)
    setup = replace(setup, model=config)

    started = time.perf_counter()
    tokens = TokenizedTexts.from_texts(tokenizer, noisy.dataset.texts, config.max_length)
    labels = torch.as_tensor(noisy.dataset.labels, dtype=torch.long)
    run = train_small(config, tokens, labels, seed=setup.seed)
    train_seconds = time.perf_counter() - started
    predicted = predict_small(run.model, tokens).argmax(1)
    heldout_probs = predict_small(run.model, TokenizedTexts.from_texts(tokenizer, heldout.texts, config.max_length))
    noisy_labels = np.asarray(noisy.dataset.labels)
    training = {
        "n_train": len(train),
        "n_flipped": int(noisy.flipped.sum()),
        "n_heldout": len(heldout),
        "train_seconds": round(train_seconds, 2),
        "train_accuracy_noisy": float((predicted == noisy_labels).mean()),
        "flipped_memorised": (float((predicted[noisy.flipped] == noisy_labels[noisy.flipped]).mean())
                              if noisy.flipped.any() else None),
        "heldout_accuracy": float((heldout_probs.argmax(1) == np.asarray(heldout.labels)).mean()),
        "checkpoint_learning_rates": [lr for _, lr in run.checkpoints],
        "final_loss_mean_last_20": float(np.mean(run.losses[-20:])),
    }
    models = [(as_classifier(m, tokenizer, config.max_length), lr) for m, lr in checkpoint_models(config, run)]
    detection, confidence, length_spearman = [], [], {}
    lengths = tokens.attention_mask.sum(1).numpy()
    conf_column = train.extra.get("confidence")
    for method in self_influence_methods(models, tokenizer, setup.methods, config, setup.middle_layer, setup.seed):
        t0 = time.perf_counter()
        scores = np.asarray(method.self_influence(noisy.dataset.texts, noisy.dataset.labels), dtype=np.float64)
        seconds = time.perf_counter() - t0
        if progress:
            print(f"  {method.name}: self-influence of {len(scores)} texts in {seconds:.1f} s", flush=True)
        length_spearman[method.name] = spearman(scores, lengths)
        if noisy.flipped.any():
            detection.append(detection_score(method.name, scores, noisy.flipped, seconds))
        if conf_column is not None:
            confidence.append(confidence_relation(method.name, scores, conf_column))
    return MislabelReport(setup, detection, confidence, training, length_spearman)

