"""The cancellation diagnostic: which layer's per-example gradients add up, and which cancel.

For a parameter block ``theta`` and labelled examples ``z_1..z_n``::

    C(theta) = sum_i ||grad_theta loss(z_i)|| / ||sum_i grad_theta loss(z_i)||

``C = 1`` when all gradients point the same way; ``C`` grows without bound as
they cancel (two opposite gradients give ``inf``). Independent random
directions of equal norm give about ``sqrt(n)``. The paper explains the poor
influence estimates of the last layer by large cancellation there; a 2025
critique calls the ratio an unreliable guide for choosing a layer. This module
measures it, per layer, so a user can look at their own model.

Word embeddings use the sparse per-example records (`TokenGradients`), whose
norm equals the dense weight gradient's; every other block uses an exact
per-example backward pass (batch size 1, so no padding is involved).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tracinwe.capture.gradients import CaptureSettings, capture_token_gradients, prepared_for_capture
from tracinwe.errors import TracInWEError
from tracinwe.io import save_figure_atomic, write_text_atomic
from tracinwe.models.contract import TextClassifier
from tracinwe.models.huggingface import as_text_classifier
from tracinwe.validation import check_labels, check_texts

WORD_EMBEDDINGS = "word embeddings"
_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")

#: Maps a parameter name to the name of its group (None: leave the parameter out).
GroupBy = Callable[[str], "str | None"]


def pairwise_cosine(sum_of_norms: float, norm_of_sum: float, sum_of_squared_norms: float) -> float:
    """Norm-weighted mean cosine between *different* examples' gradients (-1 .. 1).

    ``sum_{i != j} g_i . g_j / sum_{i != j} ||g_i|| ||g_j||``: about 0 when the gradients are
    unrelated (e.g. texts sharing no words have orthogonal word-embedding gradients), < 0 when
    they oppose each other. It tells which of the two makes ``C`` large.
    """
    denominator = sum_of_norms ** 2 - sum_of_squared_norms
    if denominator <= 0.0:
        return math.nan
    return (norm_of_sum ** 2 - sum_of_squared_norms) / denominator


def cancellation_ratio(sum_of_norms: float, norm_of_sum: float) -> float:
    """``sum_i ||g_i|| / ||sum_i g_i||``; ``inf`` when the sum vanishes, ``nan`` when every g_i does."""
    if sum_of_norms == 0.0:
        return math.nan
    if norm_of_sum == 0.0:
        return math.inf
    return sum_of_norms / norm_of_sum


class CancellationAccumulator:
    """Running ``sum_i ||g_i||`` and ``sum_i g_i`` of one parameter block (float64)."""

    def __init__(self, size: int, device: torch.device | str = "cpu") -> None:
        self.total = torch.zeros(size, dtype=torch.float64, device=device)
        self.sum_of_norms = 0.0
        self.sum_of_squared_norms = 0.0
        self.count = 0

    def add(self, gradients: torch.Tensor) -> None:
        """Add per-example gradients (n, size), or one gradient (size,)."""
        g = gradients.reshape(-1, self.total.numel()).to(self.total.device, torch.float64)
        self.total += g.sum(dim=0)
        norms = g.norm(dim=1)
        self.sum_of_norms += float(norms.sum())
        self.sum_of_squared_norms += float((norms ** 2).sum())
        self.count += g.shape[0]

    @property
    def norm_of_sum(self) -> float:
        return float(self.total.norm())

    @property
    def ratio(self) -> float:
        return cancellation_ratio(self.sum_of_norms, self.norm_of_sum)

    @property
    def mean_pairwise_cosine(self) -> float:
        return pairwise_cosine(self.sum_of_norms, self.norm_of_sum, self.sum_of_squared_norms)


@dataclass
class LayerCancellation:
    """The cancellation of one parameter group over a set of examples."""

    name: str
    num_parameters: int
    mean_gradient_norm: float  # (1/n) sum_i ||g_i||
    norm_of_mean_gradient: float  # ||(1/n) sum_i g_i||
    ratio: float  # C = sum_i ||g_i|| / ||sum_i g_i||
    mean_pairwise_cosine: float  # ~0: unrelated gradients, < 0: opposing ones (see `pairwise_cosine`)


@dataclass
class CancellationReport:
    """Per-layer cancellation ratios of one model on one set of labelled examples."""

    layers: list[LayerCancellation]
    num_examples: int
    model: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    @property
    def random_direction_ratio(self) -> float:
        """``sqrt(n)``: what n unrelated gradients of equal norm would give."""
        return math.sqrt(self.num_examples)

    def ratio(self, name: str) -> float:
        """The ratio of the group called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer.ratio
        raise KeyError(f"no group {name!r}; groups are {[layer.name for layer in self.layers]}")

    def to_json(self) -> dict:
        return {
            "format_version": 1,
            "definition": "C = sum_i ||grad loss(z_i)|| / ||sum_i grad loss(z_i)||; 1 = aligned, larger = more cancellation",
            "num_examples": self.num_examples,
            "random_direction_ratio": self.random_direction_ratio,
            "model": self.model,
            "settings": self.settings,
            "layers": [{k: _json_float(v) for k, v in asdict(layer).items()} for layer in self.layers],
        }

    def table(self, title: str | None = None):
        """A rich table, one row per group."""
        from rich.table import Table

        default = f"Cancellation ratio per layer (n = {self.num_examples}, sqrt(n) = {self.random_direction_ratio:.1f})"
        table = Table(title=title or default)
        for col in ("group", "parameters", "mean ||g_i||", "||mean g_i||", "C", "mean cos(g_i, g_j)"):
            table.add_column(col, justify="left" if col == "group" else "right")
        for layer in self.layers:
            table.add_row(
                layer.name, f"{layer.num_parameters:,}", f"{layer.mean_gradient_norm:.3g}",
                f"{layer.norm_of_mean_gradient:.3g}", f"{layer.ratio:.2f}", f"{layer.mean_pairwise_cosine:+.3f}",
            )
        return table

    def save(self, folder: str | Path, stem: str = "cancellation") -> tuple[Path, Path]:
        """Write ``stem.json`` and the bar plot ``stem.png`` into ``folder`` (atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        json_path, png_path = folder / f"{stem}.json", folder / f"{stem}.png"
        write_text_atomic(json_path, json.dumps(self.to_json(), indent=2))
        plot_cancellation(self, png_path)
        return json_path, png_path


def _json_float(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan
    return value


def plot_cancellation(report: CancellationReport, path: str | Path, title: str | None = None) -> Path:
    """A bar plot of C per group (log scale) with the random-direction level sqrt(n) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = [layer.name for layer in report.layers]
    finite = [layer.ratio if math.isfinite(layer.ratio) else np.nan for layer in report.layers]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 4.0))
    ax.bar(range(len(names)), finite, color="#4c72b0")
    ax.axhline(report.random_direction_ratio, color="#c44e52", linestyle="--",
               label=f"sqrt(n) = {report.random_direction_ratio:.1f}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("C = sum ||g_i|| / ||sum g_i||")
    ax.set_title(title or f"Cancellation per layer ({report.model.get('name', 'model')}, n = {report.num_examples})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=120)
    plt.close(fig)
    return path


def default_group_by(module: nn.Module) -> GroupBy:
    """Group parameters by transformer layer (``layer.i``), else by top-level submodule.

    The base-model prefix of HF models (``bert.``) is dropped, so BERT gives
    ``embeddings`` (position, type, LayerNorm), ``layer.0`` ... ``layer.L-1``,
    ``pooler`` and ``classifier``; a CNN gives one group per top-level module.
    """
    prefix = getattr(module, "base_model_prefix", "")

    def group(name: str) -> str | None:
        match = _LAYER_INDEX.search(name)
        if match:
            return f"layer.{match.group(1)}"
        parts = name.split(".")
        if prefix and parts[0] == prefix and len(parts) > 1:
            parts = parts[1:]
        return parts[0]

    return group


@dataclass
class _Group:
    name: str
    params: list[nn.Parameter]
    accumulator: CancellationAccumulator

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.params)


def _parameter_groups(classifier: TextClassifier, group_by: GroupBy) -> tuple[nn.Parameter, list[_Group]]:
    """The word-embedding weight and the other parameters grouped, in model order."""
    word = getattr(classifier.embedding, "weight", None)
    if not isinstance(word, nn.Parameter):
        raise TypeError("the classifier's embedding has no .weight parameter: cancellation needs one")
    groups: dict[str, list[nn.Parameter]] = {}
    word_group = None
    for name, p in classifier.module.named_parameters():
        if p is word:
            word_group = group_by(name)
            continue
        key = group_by(name)
        if key is not None:
            groups.setdefault(key, []).append(p)
    if word_group in groups:  # e.g. BERT's position/type embeddings and their LayerNorm
        groups = {(f"{k} (rest)" if k == word_group else k): v for k, v in groups.items()}
    device = word.device
    out = [_Group(k, ps, CancellationAccumulator(sum(p.numel() for p in ps), device)) for k, ps in groups.items()]
    return word, out


def _word_embedding_layer(
    classifier: TextClassifier, texts: list[str], labels: list[int], device, batch_size: int, progress: bool
) -> LayerCancellation:
    """Sum the sparse records into a V x d accumulator; the per-example norms are the dense ones."""
    settings = CaptureSettings(top_k=None, keep_special_tokens=True, batch_size=batch_size)
    records = capture_token_gradients(classifier, texts, labels, None, settings, device, progress)
    vocab, dim = classifier.vocab_size, records.dim
    total = torch.zeros(vocab, dim, dtype=torch.float64)
    total.index_add_(0, records.token_ids, records.rows.double())
    squared = records.squared_norms()
    sum_of_norms, sum_of_squares = float(squared.sqrt().sum()), float(squared.sum())
    norm_of_sum = float(total.norm())
    n = len(texts)
    return LayerCancellation(WORD_EMBEDDINGS, vocab * dim, sum_of_norms / n, norm_of_sum / n,
                             cancellation_ratio(sum_of_norms, norm_of_sum),
                             pairwise_cosine(sum_of_norms, norm_of_sum, sum_of_squares))


def layer_cancellation(
    model,
    texts: Sequence[str],
    labels: Sequence[int | str],
    tokenizer=None,
    max_length: int = 128,
    group_by: GroupBy | None = None,
    device: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> CancellationReport:
    """The cancellation ratio of the word embeddings and of every other parameter group.

    Args:
        model: a HuggingFace sequence classifier (with ``tokenizer``) or a `TextClassifier`.
        texts, labels: the examples; gradients are of the cross-entropy of these labels, in eval mode.
        group_by: parameter name -> group name (None leaves it out); default `default_group_by`.
        device: where to compute (default: where the model is).

    The model's modes and ``requires_grad`` flags are restored afterwards.
    """
    classifier = as_text_classifier(model, tokenizer, max_length)
    texts = check_texts(texts)
    checked = check_labels(labels, len(texts), classifier)
    if checked is None:
        raise TracInWEError("the cancellation diagnostic needs the gold labels: pass labels=[...] (one per text)")
    word_layer = _word_embedding_layer(classifier, texts, checked, device, batch_size, progress)
    word, groups = _parameter_groups(classifier, group_by or default_group_by(classifier.module))
    _accumulate_per_example(classifier, texts, checked, groups, device, progress)
    n = len(texts)
    layers = [word_layer] + [
        LayerCancellation(g.name, g.size, g.accumulator.sum_of_norms / n, g.accumulator.norm_of_sum / n,
                          g.accumulator.ratio, g.accumulator.mean_pairwise_cosine)
        for g in groups
    ]
    return CancellationReport(
        layers, n, model=classifier.fingerprint_parts(),
        settings={"max_length": max_length, "loss": "cross-entropy of the given labels, eval mode"},
    )


def _accumulate_per_example(
    classifier: TextClassifier, texts: list[str], labels: list[int], groups: list[_Group], device, progress: bool
) -> None:
    """One exact backward per example (batch size 1) into each group's accumulator."""
    from tqdm.auto import tqdm

    params = [p for g in groups for p in g.params]
    if not params:
        return
    with prepared_for_capture(classifier.module, device):  # eval mode; flags restored on exit
        for p in params:
            p.requires_grad_(True)
        run_device = params[0].device
        pairs = tqdm(list(zip(texts, labels)), desc="per-example gradients", unit="ex", disable=not progress, leave=False)
        for text, label in pairs:
            batch = {k: v.to(run_device) for k, v in classifier.tokenize([text]).items()}
            with torch.enable_grad():
                logits = classifier.logits(batch)
                loss = classifier.per_example_loss(logits, torch.tensor([label], device=logits.device)).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            i = 0
            for g in groups:
                parts = [
                    (grad if grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p, grad in zip(g.params, grads[i : i + len(g.params)])
                ]
                i += len(g.params)
                g.accumulator.add(torch.cat(parts))
