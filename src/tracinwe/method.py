"""The influence-method contract shared by `TracInWE` and every baseline.

`CheckpointMethod` is a template: it validates the inputs (one-line errors),
fills missing test labels with the final checkpoint's predictions, and sums
over checkpoints weighted by their learning rates η_c. A method supplies only

* `represent(c, examples)`: the examples at checkpoint ``c`` (or
  `represent_chunks` to stream them),
* `compare(queries, keys)`: two representations -> (n_queries, n_keys),
* `diagonal(rep)`: each example against itself, for self-influence,

and, when it does not use every checkpoint with its η_c, `checkpoint_weights`.
A method with ``supports_causal_lm`` also takes decoder-only LM checkpoints: its examples are
documents (strings, prompt/completion dicts, chats) and take no labels.
Every score follows `SIGN_CONVENTION`: **> 0 = proponent**, < 0 = opponent.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracinwe.capture.model_state import prepared_for_capture
from tracinwe.errors import CheckpointError, InputTextError, LabelError, TracInWEError
from tracinwe.models.causal_lm import as_causal_lm
from tracinwe.models.checkpoints import Checkpoint, check_checkpoint_folder
from tracinwe.models.contract import TextClassifier
from tracinwe.models.huggingface import as_text_classifier
from tracinwe.models.tasks import CAUSAL_LM, resolve_task
from tracinwe.results import TopInfluences
from tracinwe.scoring.influence import SIGN_CONVENTION
from tracinwe.validation import check_labels, check_lm_examples, check_pairs, check_texts, refuse_lm_labels


class InfluenceMethod(ABC):
    """Scores training examples against test examples: (n_test, n_train), > 0 = proponent."""

    #: Short display name, used as the method's key in evaluation tables.
    name: str = "influence"
    sign_convention = SIGN_CONVENTION

    @abstractmethod
    def scores(self, train_texts: Sequence[str], train_labels: Sequence[int | str], test_texts: Sequence[str],
               test_labels: Sequence[int | str] | None = None) -> np.ndarray:
        """Influence of each training example on each test example; ``test_labels=None`` explains the predictions."""

    def self_influence(self, texts: Sequence[str], labels: Sequence[int | str]) -> np.ndarray:
        """Each example's influence on itself (n,): high values flag mislabelled or atypical examples."""
        raise TracInWEError(f"{self.name} has no self-influence: use a TracIn-style method or LossSelfInfluence")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


@dataclass(frozen=True)
class Examples:
    """One side's validated inputs: texts, class ids (predictions when none were given), sentence pairs."""

    texts: list  # strings; for a language model also prompt/completion dicts and chats
    labels: list[int] | None  # None for a language model (the text is its own target)
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)


def checkpoints_from(
    models: Sequence[tuple[object, float]], tokenizer=None, max_length: int = 128, task: str | None = None
) -> list[Checkpoint]:
    """``[(model or folder, learning_rate), ...]`` (oldest first) as `Checkpoint`s; one-line `CheckpointError` if bad.

    ``task``: "classification" or "causal-lm"; None detects it from the checkpoints (`resolve_task`).
    """
    if not models:
        raise CheckpointError("no checkpoints given: pass models=[(model, learning_rate), ...]")
    checked = []
    for model, lr in models:
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise CheckpointError(f"learning rate {lr!r} is not a positive number: pass (model, lr) pairs with lr > 0")
        checked.append((check_checkpoint_folder(model) if isinstance(model, (str, Path)) else model, float(lr)))
    task = resolve_task([m for m, _ in checked], task)
    out = []
    for model, lr in checked:
        if isinstance(model, Path):
            out.append(Checkpoint(lr, path=model, max_length=max_length, tokenizer=tokenizer, task=task))
        elif task == CAUSAL_LM:
            out.append(Checkpoint(lr, classifier=as_causal_lm(model, tokenizer, max_length), task=task))
        else:
            out.append(Checkpoint(lr, classifier=as_text_classifier(model, tokenizer, max_length)))
    return out


class CheckpointMethod(InfluenceMethod):
    """An influence method over ``[(model, learning_rate), ...]`` checkpoints (oldest first), the template above.

    Models are HuggingFace classifiers (with ``tokenizer``), `TextClassifier`s or checkpoint
    folders (loaded one at a time).
    """

    #: Whether the method takes sentence pairs (``train_pairs`` / ``test_pairs``).
    supports_pairs: bool = False
    #: Whether the method scores decoder-only language models (``task="causal-lm"``).
    supports_causal_lm: bool = False

    def __init__(
        self,
        models: Sequence[tuple[object, float]],
        tokenizer=None,
        max_length: int = 128,
        batch_size: int = 32,
        device: str | None = None,
        *,
        task: str | None = None,
    ) -> None:
        self.checkpoints = checkpoints_from(models, tokenizer, max_length, task)
        self.task = self.checkpoints[0].task
        if self.is_causal_lm and not self.supports_causal_lm:
            raise TracInWEError(f"{type(self).__name__} does not score causal language models: use TracInWE")
        self.max_length = max_length
        self.batch_size = int(batch_size)
        self.device = device
        self._loaded: tuple[int, TextClassifier] | None = None
        self._load_lock = threading.Lock()
        self._check_consistent()

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def is_causal_lm(self) -> bool:
        """Whether the checkpoints are decoder-only language models (examples are documents, no labels)."""
        return self.task == CAUSAL_LM

    @property
    def learning_rates(self) -> list[float]:
        return [c.learning_rate for c in self.checkpoints]

    def classifier(self, c: int) -> TextClassifier:
        """The classifier of checkpoint ``c`` (folders are loaded once and the last one is kept)."""
        ckpt = self.checkpoints[c]
        if ckpt.classifier is not None:
            return ckpt.classifier
        with self._load_lock:  # threads share the loaded checkpoint; each gets the one it asked for
            loaded = self._loaded
            if loaded is None or loaded[0] != c:
                self._loaded = None
                self._loaded = loaded = (c, ckpt.load(self.device or "cpu"))
        return loaded[1]

    @property
    def final(self) -> TextClassifier:
        """The last checkpoint: the model whose predictions are explained."""
        return self.classifier(len(self.checkpoints) - 1)

    def _check_consistent(self) -> None:
        shapes = {(c.classifier.num_classes, c.classifier.vocab_size) for c in self.checkpoints if c.classifier is not None}
        if len(shapes) > 1:
            raise CheckpointError(
                f"checkpoints disagree on (classes, vocabulary) {sorted(shapes)}: pass checkpoints of one training run"
            )

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        """``[(checkpoint, weight), ...]`` summed over: every checkpoint with its learning rate (TracIn)."""
        return list(enumerate(self.learning_rates))

    def final_checkpoint(self) -> list[tuple[int, float]]:
        """The weights of a method that looks at the final checkpoint only, unweighted."""
        return [(len(self.checkpoints) - 1, 1.0)]

    # -- inputs ------------------------------------------------------------------------------

    def check_inputs(
        self, texts, labels=None, pairs=None, role: str = "train"
    ) -> tuple[list[str], list[int] | None, list[str] | None]:
        """Checked ``(texts, label ids, pairs)``: raises a one-line error naming ``{role}_texts[i]`` etc. on bad input."""
        prefix = f"{role}_" if role else ""
        if self.is_causal_lm:
            refuse_lm_labels(labels, f"{prefix}labels")
            if pairs is not None:
                raise InputTextError("a language model takes no text pairs: pass {'prompt': ..., 'completion': ...} dicts")
            return check_lm_examples(texts, self.final, f"{prefix}texts"), None, None
        texts = check_texts(texts, f"{prefix}texts")
        labels = check_labels(labels, len(texts), self.final, f"{prefix}labels")
        if pairs is not None and not self.supports_pairs:
            raise TracInWEError(f"{self.name} does not take sentence pairs: score single texts or use TracIn-WE")
        return texts, labels, check_pairs(pairs, len(texts), f"{prefix}pairs")

    def examples(self, texts, labels=None, pairs=None, role: str = "test", labels_required: bool = False) -> Examples:
        """Checked inputs; missing labels are the final checkpoint's predictions unless ``labels_required``."""
        texts, labels, pairs = self.check_inputs(texts, labels, pairs, role)
        if labels is None and not self.is_causal_lm:
            if labels_required:
                raise LabelError(f"{role + '_' if role else ''}labels are required: pass one label per text")
            labels = self.predicted_labels(texts, pairs)
        return Examples(texts, labels, pairs)

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (n, C) of the final checkpoint."""
        if self.is_causal_lm:
            raise TracInWEError("a causal language model has no class probabilities: score documents with labels=None")
        texts = check_texts(texts)
        clf = self.final
        probs = np.empty((len(texts), clf.num_classes), dtype=np.float32)  # filled in place: no small blocks pile up
        with torch.no_grad(), prepared_for_capture(clf.module, self.device):
            dev = next(clf.module.parameters()).device
            for b in range(0, len(texts), self.batch_size):
                sl = slice(b, b + self.batch_size)
                batch = clf.tokenize(texts[sl], text_pairs[sl] if text_pairs is not None else None)
                logits = clf.logits({k: v.to(dev) for k, v in batch.items()})
                probs[sl] = torch.softmax(logits.float(), -1).cpu().numpy()
        return probs

    def predicted_labels(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> list[int]:
        """The final checkpoint's predicted class per text."""
        return self.predict(texts, text_pairs).argmax(1).tolist()

    # -- the template ------------------------------------------------------------------------

    def scores(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int | str],
        test_texts: Sequence[str],
        test_labels: Sequence[int | str] | None = None,
        train_pairs: Sequence[str] | None = None,
        test_pairs: Sequence[str] | None = None,
    ) -> np.ndarray:
        """``sum_c w_c compare(test at c, train at c)``: (n_test, n_train) float64, > 0 = proponent.

        ``test_labels=None`` explains the final checkpoint's predictions. A language model takes
        ``train_labels=None`` and ``test_labels=None`` (each document's loss is on its own tokens).
        """
        if not self._overrides("compare"):
            raise TracInWEError(f"{self.name} scores each example on its own: call self_influence(texts, labels)")
        train = self.examples(train_texts, train_labels, train_pairs, "train", labels_required=not self.is_causal_lm)
        test = self.examples(test_texts, test_labels, test_pairs, "test")
        out = torch.zeros(len(test), len(train), dtype=torch.float64)
        for c, weight in self.checkpoint_weights():  # checkpoint-major: each checkpoint is loaded once
            queries = self.represent(c, test)
            for start, keys in self.represent_chunks(c, train):
                block = self.compare(queries, keys).to("cpu", torch.float64)
                out[:, start : start + block.shape[1]] += weight * block
        return out.numpy()

    def self_influence(
        self, texts: Sequence[str], labels: Sequence[int | str] | None = None, text_pairs: Sequence[str] | None = None
    ) -> np.ndarray:
        """``sum_c w_c diagonal(x at c)`` (n,): high values flag mislabelled or atypical examples (LMs: labels=None)."""
        if not self._overrides("diagonal"):
            return super().self_influence(texts, labels)
        examples = self.examples(texts, labels, text_pairs, "", labels_required=not self.is_causal_lm)
        out = torch.zeros(len(examples), dtype=torch.float64)
        for c, weight in self.checkpoint_weights():
            for start, rep in self.represent_chunks(c, examples):
                values = self.diagonal(rep).to("cpu", torch.float64)
                out[start : start + values.numel()] += weight * values
        return out.numpy()

    def influence(self, train_texts, train_labels, test_texts, test_labels=None, k: int = 10,
                  proponents: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the k top proponents (or opponents) per test text, as in captum."""
        top = TopInfluences.from_scores(self.scores(train_texts, train_labels, test_texts, test_labels), k)
        if proponents:
            return top.proponent_indices, top.proponent_scores
        return top.opponent_indices, top.opponent_scores

    def top_influences(self, *args, k: int = 10, **kwargs) -> TopInfluences:
        """Top-k proponents and opponents per test text (arguments as `scores`)."""
        return TopInfluences.from_scores(self.scores(*args, **kwargs), k)

    # -- what a method supplies --------------------------------------------------------------

    @abstractmethod
    def represent(self, c: int, examples: Examples) -> Any:
        """The examples at checkpoint ``c``, in the form `compare` and `diagonal` take."""

    def represent_chunks(self, c: int, examples: Examples) -> Iterator[tuple[int, Any]]:
        """``(start, representation)`` of consecutive runs of examples (default: all at once)."""
        yield 0, self.represent(c, examples)

    def compare(self, queries: Any, keys: Any) -> torch.Tensor:
        """(n_queries, n_keys) similarity of two representations at one checkpoint, > 0 = proponent."""
        raise NotImplementedError

    def diagonal(self, rep: Any) -> torch.Tensor:
        """(n,) each example compared with itself (the diagonal of ``compare(rep, rep)`` for TracIn methods)."""
        raise NotImplementedError

    def _overrides(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(CheckpointMethod, hook)
