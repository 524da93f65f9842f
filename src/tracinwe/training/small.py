"""Seeded models that retrain in seconds: the injectable ``train_fn``/``eval_fn`` of the evaluations.

Texts are tokenized once (BERT WordPiece ids of the MiniLM vocabulary) and
training runs on tensors: a `TokenCNN` over the token ids, as in the authors'
code, or the paper's BERT-small shape from scratch, trained with SGD +
momentum. A run keeps evenly spaced checkpoints (state dicts and the learning
rate in force) in memory, for TracIn.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from tracinwe.errors import TracInWEError
from tracinwe.models.contract import TextClassifier, TorchTextClassifier
from tracinwe.models.small import TokenCNN, bert_small_config

#: "minilm-l<n>": the bundled pretrained MiniLM-L6 cut to its first n layers (dropout off), fine-tuned.
#: "cnn-minilm": the TokenCNN whose word embeddings start from MiniLM-L6's, projected to ``dim``.
ARCHITECTURES = ("cnn", "cnn-minilm", "bert-small", "minilm-l2", "minilm-l6")
CNN_ARCHITECTURES = ("cnn", "cnn-minilm")


@dataclass(frozen=True)
class SmallModelConfig:
    """Model shape and training recipe; saved beside every evaluation result."""

    num_classes: int = 2
    #: "cnn" (TokenCNN over BERT ids), "bert-small" (from scratch) or "minilm-l2"/"minilm-l6" (pretrained)
    architecture: str = "cnn"
    vocab_size: int = 30522
    dim: int = 64  # CNN embedding width
    channels: int = 64  # CNN convolution channels
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 0.05
    momentum: float = 0.9
    optimizer: str = "sgd"  # "sgd" (SGD + momentum, the paper's) or "adamw" (fine-tuning pretrained encoders)
    num_checkpoints: int = 3
    max_length: int = 48
    device: str = "auto"  # "auto": cuda when available

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise TracInWEError(f"architecture {self.architecture!r} is unknown: pick one of {ARCHITECTURES}")
        if self.num_classes < 2:
            raise TracInWEError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.optimizer not in ("sgd", "adamw"):
            raise TracInWEError(f"optimizer {self.optimizer!r} is unknown: pick sgd or adamw")
        if self.num_checkpoints < 1 or self.epochs < 1:
            raise TracInWEError("epochs and num_checkpoints must be at least 1")

    @property
    def run_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def to_json(self) -> dict:
        return asdict(self)


#: Retraining recipes that pass the noise gate (median |Δp_gold| of random deletions ≤ 0.02) on the
#: bundled data (measured by benchmarks/bench_lds.py and bench_deletion.py; see docs/evaluation.md).
STABLE_RECIPES: dict[str, dict] = {
    "cnn": {"learning_rate": 0.02, "epochs": 6, "batch_size": 32, "optimizer": "sgd"},
    "cnn-minilm": {"learning_rate": 0.005, "epochs": 10, "batch_size": 32, "optimizer": "sgd"},
    "bert-small": {"learning_rate": 0.02, "epochs": 6, "batch_size": 32, "optimizer": "sgd"},
    "minilm-l2": {"learning_rate": 1e-4, "epochs": 3, "batch_size": 32, "optimizer": "adamw"},
    "minilm-l6": {"learning_rate": 1e-4, "epochs": 3, "batch_size": 32, "optimizer": "adamw"},
}


def stable_config(architecture: str = "cnn", **overrides) -> SmallModelConfig:
    """The stable recipe of an architecture; ``None`` overrides are ignored (use the recipe's value)."""
    if architecture not in STABLE_RECIPES:
        raise TracInWEError(f"architecture {architecture!r} is unknown: pick one of {list(STABLE_RECIPES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return SmallModelConfig(architecture=architecture, **{**STABLE_RECIPES[architecture], **given})


@dataclass
class TokenizedTexts:
    """Token ids and attention masks (n, T), padded to the longest text (at most ``max_length``)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @classmethod
    def from_texts(cls, tokenizer, texts: Sequence[str], max_length: int) -> "TokenizedTexts":
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return cls(enc["input_ids"], enc["attention_mask"])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def batch(self, rows: torch.Tensor | Sequence[int], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The rows, trimmed to their longest text."""
        ids, mask = self.input_ids[rows], self.attention_mask[rows]
        width = max(int(mask.sum(1).max()), 1)
        return ids[:, :width].to(device), mask[:, :width].to(device)

    def masked(self, tokens_by_row: Mapping[int, Sequence[int]], pad_id: int = 0) -> "TokenizedTexts":
        """A copy where the given token ids of the given rows become padding (masked out)."""
        ids, mask = self.input_ids.clone(), self.attention_mask.clone()
        for row, tokens in tokens_by_row.items():
            hit = torch.isin(ids[row], torch.as_tensor(list(tokens), dtype=ids.dtype))
            ids[row, hit] = pad_id
            mask[row, hit] = 0
        return TokenizedTexts(ids, mask)


@dataclass
class SmallRun:
    """A trained model and its checkpoints ``[(state_dict, learning_rate), ...]``, oldest first."""

    model: nn.Module
    checkpoints: list[tuple[dict, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def build_model(config: SmallModelConfig, seed: int) -> nn.Module:
    """A freshly initialised model; the same seed gives the same weights."""
    torch.manual_seed(seed)
    if config.architecture in CNN_ARCHITECTURES:
        model = TokenCNN(config.vocab_size, config.num_classes, dim=config.dim, channels=config.channels)
        if config.architecture == "cnn-minilm":
            with torch.no_grad():
                model.embed.weight.copy_(minilm_word_embeddings(config.vocab_size, config.dim))
        return model
    from transformers import BertForSequenceClassification

    if config.architecture.startswith("minilm"):
        return pretrained_minilm(config.num_classes, int(config.architecture.removeprefix("minilm-l")))
    model = BertForSequenceClassification(bert_small_config(config.num_classes, config.vocab_size, max(config.max_length, 64)))
    return model


def pretrained_minilm(num_classes: int, layers: int) -> nn.Module:
    """The bundled MiniLM-L6 with a fresh (seeded) head, cut to its first ``layers`` encoder layers, dropout off."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from tracinwe.models.checkpoints import hf_progress_bars_hidden
    from tracinwe.models.pretrained import minilm_l6_path

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "classifier.* newly initialised" report is expected here
    try:
        with hf_progress_bars_hidden():
            model = AutoModelForSequenceClassification.from_pretrained(
                minilm_l6_path(), num_labels=num_classes, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.bert.encoder.layer = model.bert.encoder.layer[:layers]
    model.config.num_hidden_layers = layers
    return model


@functools.lru_cache(maxsize=4)
def minilm_word_embeddings(vocab_size: int, dim: int) -> torch.Tensor:
    """MiniLM-L6's word embeddings on their top ``dim`` principal components, scaled to unit variance.

    The same for every seed (the PCA is deterministic), so the seed only changes the layers above.
    """
    from safetensors.torch import load_file

    from tracinwe.models.pretrained import minilm_l6_path

    weights = load_file(str(minilm_l6_path() / "model.safetensors"))
    table = next(v for k, v in weights.items() if k.endswith("word_embeddings.weight")).double()
    if table.shape[0] != vocab_size or dim > table.shape[1]:
        raise TracInWEError(f"cnn-minilm needs vocab_size {table.shape[0]} and dim <= {table.shape[1]}, "
                            f"got {vocab_size} and {dim}")
    centred = table - table.mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    v = v[:dim].T * torch.sign(v[:dim].sum(1))  # a fixed sign per component
    projected = centred @ v
    return (projected / projected.std()).float()


def model_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Logits of a `build_model` model."""
    if isinstance(model, TokenCNN):
        return model(input_ids, attention_mask)
    return model(input_ids=input_ids, attention_mask=attention_mask).logits


def train_small(
    config: SmallModelConfig,
    tokens: TokenizedTexts,
    labels: torch.Tensor,
    indices: Sequence[int] | None = None,
    seed: int = 0,
    keep_checkpoints: bool = True,
) -> SmallRun:
    """Train on the rows ``indices`` of ``tokens`` with SGD + momentum; the seed fixes init and order.

    The example order is the seeded order of *all* rows restricted to ``indices``, so runs on
    subsets of the same rows with the same seed see the remaining examples in the same order.
    """
    rows = torch.arange(len(tokens)) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
    if rows.numel() == 0:
        raise TracInWEError("no training examples left: delete fewer examples")
    device = config.run_device
    if device.startswith("cuda"):  # paired runs must differ only by the deletion, not by atomics
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.use_deterministic_algorithms(True, warn_only=True)
    model = build_model(config, seed).to(device)
    if config.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum)
    rng = np.random.default_rng(seed)
    steps_per_epoch = -(-rows.numel() // config.batch_size)
    total = steps_per_epoch * config.epochs
    save_at = {round(total * (i + 1) / config.num_checkpoints) for i in range(config.num_checkpoints)}
    run = SmallRun(model)
    y_all = labels.to(device)
    model.train()
    step = 0
    for _ in range(config.epochs):
        # One random key per row of the whole set: deleting rows keeps the others' relative order,
        # so a retrain differs from its paired full run only by the deletion.
        keys = torch.from_numpy(rng.random(len(tokens)))
        order = rows[torch.argsort(keys[rows])]
        for b in range(0, order.numel(), config.batch_size):
            batch_rows = order[b : b + config.batch_size]
            ids, mask = tokens.batch(batch_rows, device)
            loss = torch.nn.functional.cross_entropy(model_logits(model, ids, mask), y_all[batch_rows.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run.losses.append(float(loss.detach()))
            if keep_checkpoints and step in save_at:
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                run.checkpoints.append((state, config.learning_rate))
    model.eval()
    return run


@torch.no_grad()
def predict_small(model: nn.Module, tokens: TokenizedTexts, rows: Sequence[int] | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n, C) for the rows (all by default)."""
    model.eval()
    device = next(model.parameters()).device
    rows = list(range(len(tokens))) if rows is None else list(rows)
    out = []
    for b in range(0, len(rows), batch_size):
        ids, mask = tokens.batch(rows[b : b + batch_size], str(device))
        out.append(torch.softmax(model_logits(model, ids, mask).float(), -1).cpu())
    return torch.cat(out).numpy().astype(np.float64)


def checkpoint_models(config: SmallModelConfig, run: SmallRun) -> list[tuple[nn.Module, float]]:
    """The run's checkpoints as ``[(model, lr), ...]`` (CPU, eval mode), ready for TracInWE and the baselines."""
    out = []
    for state, lr in run.checkpoints:
        model = build_model(config, 0)
        model.load_state_dict(state)
        out.append((model.eval(), lr))
    return out


def as_classifier(model: nn.Module, tokenizer, max_length: int) -> TextClassifier | nn.Module:
    """What `TracInWE` and the baselines take: HF models pass through, a TokenCNN gets wrapped."""
    if isinstance(model, TokenCNN):
        return TorchTextClassifier(model, model.embed, model.classifier.out_features, hf_tokenizer=tokenizer,
                                   max_length=max_length, forward=lambda b: model(b["input_ids"], b["attention_mask"]))
    return model


@dataclass
class SmallTask:
    """Train/test tensors plus a recipe: picklable, so retrains can run in worker processes.

    ``train`` is the harness's ``train_fn(train_indices, seed)`` and ``evaluate`` its
    ``eval_fn(model, test_indices)``; indices are positions in the train / test tensors.
    """

    config: SmallModelConfig
    train_tokens: TokenizedTexts
    train_labels: torch.Tensor
    test_tokens: TokenizedTexts
    test_labels: torch.Tensor

    @classmethod
    def from_texts(cls, config: SmallModelConfig, tokenizer, train_texts, train_labels, test_texts, test_labels) -> "SmallTask":
        return cls(
            config,
            TokenizedTexts.from_texts(tokenizer, train_texts, config.max_length),
            torch.as_tensor(list(train_labels), dtype=torch.long),
            TokenizedTexts.from_texts(tokenizer, test_texts, config.max_length),
            torch.as_tensor(list(test_labels), dtype=torch.long),
        )

    def train(self, train_indices: Sequence[int], seed: int,
              masked_tokens: Mapping[int, Sequence[int]] | None = None) -> nn.Module:
        """A model trained on ``train_indices`` (with ``masked_tokens[row]`` padded out in those rows)."""
        tokens = self.train_tokens.masked(masked_tokens) if masked_tokens else self.train_tokens
        return train_small(self.config, tokens, self.train_labels, train_indices, seed, keep_checkpoints=False).model

    def evaluate(self, model: nn.Module, test_indices: Sequence[int]) -> np.ndarray:
        """Class probabilities (len(test_indices), C)."""
        return predict_small(model, self.test_tokens, test_indices)

    def full_run(self, seed: int) -> SmallRun:
        """The run on all training rows, with its checkpoints."""
        return train_small(self.config, self.train_tokens, self.train_labels, None, seed, keep_checkpoints=True)

    def checkpoint_classifiers(self, run: SmallRun, tokenizer) -> list[tuple[TextClassifier | nn.Module, float]]:
        """``[(model, lr), ...]`` of the run's checkpoints, for TracInWE and the baselines."""
        return [(as_classifier(m, tokenizer, self.config.max_length), lr) for m, lr in checkpoint_models(self.config, run)]

    def copy_for(self, config: SmallModelConfig) -> "SmallTask":
        """The same data with another recipe."""
        new = copy.copy(self)
        new.config = config
        return new
