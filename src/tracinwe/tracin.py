"""`TracInWE`: the facade. Checkpoints in, influence scores and word-level explanations out."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from tracinwe.capture.gradients import CaptureSettings, capture_checkpoints, capture_token_gradients, iter_token_gradients
from tracinwe.capture.records import TokenGradients
from tracinwe.errors import CheckpointError
from tracinwe.models.checkpoints import Checkpoint, check_checkpoint_folder, read_learning_rate
from tracinwe.models.contract import TextClassifier
from tracinwe.models.huggingface import as_text_classifier
from tracinwe.results import TopInfluences
from tracinwe.scoring.influence import SIGN_CONVENTION, TokenMajor, influence_matrix
from tracinwe.scoring.words import WordContribution, token_contributions, word_contributions
from tracinwe.validation import check_labels, check_pairs, check_texts


class TracInWE:
    """TracIn on the input word embeddings, summed over checkpoints.

    Args:
        models: ``[(model, learning_rate), ...]``, oldest checkpoint first. A model is a
            HuggingFace sequence classifier (with ``tokenizer``) or a `TextClassifier`.
        tokenizer: the HF tokenizer of the models.
        max_length: tokens per text (longer texts are truncated).
        top_k: TracIn-WE-Topk: keep the k positions of largest gradient norm (None: all).
        batch_size: examples per forward/backward pass.
        keep_special_tokens: True (default) keeps [CLS]/[SEP]; False drops them; or a set of tokens to keep.
        device: where to run ("cpu", "cuda"); default: where the model is.
        progress: show progress bars.

    Sign convention: ``score > 0`` means proponent (training on it lowered the test loss).
    """

    sign_convention = SIGN_CONVENTION

    def __init__(
        self,
        models: Sequence[tuple[object, float]],
        tokenizer=None,
        max_length: int = 128,
        top_k: int | None = None,
        batch_size: int = 32,
        keep_special_tokens: bool | Sequence[str | int] = True,
        device: str | None = None,
        progress: bool = False,
    ) -> None:
        if not models:
            raise CheckpointError("no checkpoints given: pass models=[(model, learning_rate), ...]")
        self.checkpoints = [self._as_checkpoint(m, lr, tokenizer, max_length) for m, lr in models]
        self.settings = CaptureSettings(
            top_k=top_k,
            keep_special_tokens=keep_special_tokens if isinstance(keep_special_tokens, bool) else frozenset(keep_special_tokens),
            batch_size=batch_size,
            max_length=max_length,
        )
        self.max_length = max_length
        self.device = device
        self.progress = progress
        self._loaded: tuple[int, TextClassifier] | None = None
        self._load_lock = threading.Lock()
        self._check_consistent()

    @staticmethod
    def _as_checkpoint(model, lr, tokenizer, max_length: int) -> Checkpoint:
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise CheckpointError(f"learning rate {lr!r} is not a positive number: pass (model, lr) pairs with lr > 0")
        if isinstance(model, (str, Path)):
            return Checkpoint(float(lr), path=check_checkpoint_folder(model), max_length=max_length, tokenizer=tokenizer)
        return Checkpoint(float(lr), classifier=as_text_classifier(model, tokenizer, max_length))

    @classmethod
    def from_checkpoints(
        cls, paths: Sequence[str | Path], learning_rates: Sequence[float] | None = None, tokenizer=None, **kwargs
    ) -> "TracInWE":
        """Checkpoint folders (HF ``save_pretrained`` or Trainer ``checkpoint-*``), loaded one at a time.

        Learning rates default to those recorded by the Trainer (``trainer_state.json``) or ``tracinwe train``.
        """
        paths = [check_checkpoint_folder(p) for p in paths]
        if learning_rates is None:
            learning_rates = [read_learning_rate(p) for p in paths]
        if len(learning_rates) != len(paths):
            raise CheckpointError(f"{len(learning_rates)} learning rates for {len(paths)} checkpoints: pass one per checkpoint")
        return cls(list(zip(paths, learning_rates)), tokenizer=tokenizer, **kwargs)

    @classmethod
    def from_settings(
        cls, settings: CaptureSettings, checkpoints: Sequence, learning_rates: Sequence[float] | None = None, tokenizer=None,
        device: str | None = None, progress: bool = False,
    ) -> "TracInWE":
        """The facade over ``checkpoints`` (folders, or ``(model, lr)`` pairs) capturing with ``settings``.

        The inverse of ``tw.settings``: ``TracInWE.from_settings(tw.settings, paths)`` captures as ``tw`` does.
        """
        options = dict(tokenizer=tokenizer, max_length=settings.max_length, top_k=settings.top_k, batch_size=settings.batch_size,
                       keep_special_tokens=settings.keep_special_tokens, device=device, progress=progress)
        if all(isinstance(c, (str, Path)) for c in checkpoints):
            tw = cls.from_checkpoints(checkpoints, learning_rates, **options)
        else:
            tw = cls(checkpoints, **options)
        tw.settings = settings
        return tw

    # -- checkpoints -------------------------------------------------------------------------

    @property
    def checkpoint_paths(self) -> list[Path | None]:
        """Each checkpoint's folder, oldest first (None for a model given in memory)."""
        return [c.path for c in self.checkpoints]

    def load_classifiers(self) -> list[TextClassifier]:
        """Every checkpoint's classifier, each folder loaded once now; the caller holds them (memory: all checkpoints)."""
        return [ckpt.load(self.device or "cpu") for ckpt in self.checkpoints]

    def check_inputs(self, texts, labels=None, pairs=None, role: str = "train",
                     ) -> tuple[list[str], list[int] | None, list | None]:
        """Checked ``(texts, label ids, pairs)``: raises a one-line error naming ``{role}_texts[i]`` etc. on bad input."""
        return self._validated(texts, labels, pairs, role)

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

    def keep_loaded(self) -> None:
        """Load every checkpoint folder now and keep all of them in memory.

        By default one folder is loaded at a time to bound memory; a server answering
        many queries trades that memory for latency (no reload per query).
        """
        for c, ckpt in enumerate(self.checkpoints):
            if ckpt.classifier is None:
                ckpt.classifier = self.classifier(c)
        self._loaded = None
        self._check_consistent()

    def _check_consistent(self) -> None:
        in_memory = [(c.name, c.classifier) for c in self.checkpoints if c.classifier is not None]
        shapes = {(clf.num_classes, clf.vocab_size) for _, clf in in_memory}
        if len(shapes) > 1:
            raise CheckpointError(
                f"checkpoints disagree on (classes, vocabulary) {sorted(shapes)}: pass checkpoints of one training run"
            )

    @property
    def final(self) -> TextClassifier:
        """The last checkpoint: the model whose predictions are explained."""
        return self.classifier(len(self.checkpoints) - 1)

    # -- capture -----------------------------------------------------------------------------

    def _validated(self, texts, labels, pairs, what: str):
        texts = check_texts(texts, f"{what}_texts")
        labels = check_labels(labels, len(texts), self.final, f"{what}_labels")
        pairs = check_pairs(pairs, len(texts), f"{what}_pairs")
        return texts, labels, pairs

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> np.ndarray:
        """Class probabilities (n, C) of the final checkpoint."""
        texts = check_texts(texts)
        clf = self.final
        probs = []
        with torch.no_grad():
            from tracinwe.capture.gradients import prepared_for_capture

            with prepared_for_capture(clf.module, self.device):
                dev = next(clf.module.parameters()).device
                for b in range(0, len(texts), self.settings.batch_size):
                    sl = slice(b, b + self.settings.batch_size)
                    batch = clf.tokenize(texts[sl], text_pairs[sl] if text_pairs is not None else None)
                    logits = clf.logits({k: v.to(dev) for k, v in batch.items()})
                    probs.append(torch.softmax(logits.float(), -1).cpu())
        return torch.cat(probs).numpy()

    def capture(
        self,
        texts: Sequence[str],
        labels: Sequence[int] | None = None,
        text_pairs: Sequence[str] | None = None,
        role: str = "test",
    ) -> list[TokenGradients]:
        """TokenGradients of every checkpoint (in memory). ``labels=None``: the final model's prediction.

        ``role`` only names the inputs in error messages ("test" -> ``test_texts[3] is empty``).
        """
        texts, labels, text_pairs = self._validated(texts, labels, text_pairs, role)
        if labels is None:
            labels = self.predict(texts, text_pairs).argmax(1).tolist()
        classifiers = (self.classifier(c) for c in range(len(self.checkpoints)))  # folders load one at a time
        return capture_checkpoints(classifiers, texts, labels, text_pairs, self.settings, self.device, self.progress)

    def iter_capture(
        self, texts: Sequence[str], labels: Sequence[int], text_pairs: Sequence[str] | None = None, chunk_size: int | None = None
    ) -> Iterator[tuple[int, int, TokenGradients]]:
        """Stream ``(checkpoint, start, records)`` chunk by chunk: memory bounded by the chunk."""
        texts, labels, text_pairs = self._validated(texts, labels, text_pairs, "train")
        for c in range(len(self.checkpoints)):
            for start, rec in iter_token_gradients(
                self.classifier(c), texts, labels, text_pairs, self.settings, self.device, chunk_size,
                self.progress, f"checkpoint {c + 1}/{len(self.checkpoints)}",
            ):
                yield c, start, rec

    # -- scores ------------------------------------------------------------------------------

    def scores(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int | str],
        test_texts: Sequence[str],
        test_labels: Sequence[int | str] | None = None,
        train_pairs: Sequence[str] | None = None,
        test_pairs: Sequence[str] | None = None,
    ) -> np.ndarray:
        """TracIn-WE scores (n_test, n_train); > 0 means proponent.

        ``test_labels=None`` explains the final model's predictions. Training
        examples stream through in chunks, so memory does not grow with them.
        """
        train_texts, train_labels, train_pairs = self._validated(train_texts, train_labels, train_pairs, "train")
        if train_labels is None:
            raise ValueError("train_labels are required")
        test_texts, test_labels, test_pairs = self._validated(test_texts, test_labels, test_pairs, "test")
        if test_labels is None:
            test_labels = self.predict(test_texts, test_pairs).argmax(1).tolist()
        out = torch.zeros(len(test_texts), len(train_texts), dtype=torch.float64)
        for c in range(len(self.checkpoints)):  # checkpoint-major: each checkpoint is loaded once
            clf = self.classifier(c)
            test = capture_token_gradients(clf, test_texts, test_labels, test_pairs, self.settings, self.device)
            test_major = TokenMajor.from_records(test)
            for start, rec in iter_token_gradients(
                clf, train_texts, train_labels, train_pairs, self.settings, self.device,
                progress=self.progress, description=f"checkpoint {c + 1}/{len(self.checkpoints)}",
            ):
                block = out[:, start : start + len(rec)]
                influence_matrix(test_major, TokenMajor.from_records(rec), block, weight=self.learning_rates[c])
        return out.numpy()

    def self_influence(
        self, texts: Sequence[str], labels: Sequence[int | str], text_pairs: Sequence[str] | None = None
    ) -> np.ndarray:
        """Each example's influence on itself (n,): high values flag mislabeled or atypical examples."""
        texts, labels, text_pairs = self._validated(texts, labels, text_pairs, "train")
        out = torch.zeros(len(texts), dtype=torch.float64)
        for c, start, rec in self.iter_capture(texts, labels, text_pairs):
            out[start : start + len(rec)] += self.learning_rates[c] * rec.squared_norms()
        return out.numpy()

    def influence(
        self,
        train_texts: Sequence[str],
        train_labels: Sequence[int | str],
        test_texts: Sequence[str],
        test_labels: Sequence[int | str] | None = None,
        k: int = 10,
        proponents: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the k top proponents (or opponents) per test text, as in captum."""
        top = TopInfluences.from_scores(self.scores(train_texts, train_labels, test_texts, test_labels), k)
        if proponents:
            return top.proponent_indices, top.proponent_scores
        return top.opponent_indices, top.opponent_scores

    def top_influences(self, *args, k: int = 10, **kwargs) -> TopInfluences:
        """Top-k proponents and opponents per test text (arguments as `scores`)."""
        return TopInfluences.from_scores(self.scores(*args, **kwargs), k)

    # -- explanation -------------------------------------------------------------------------

    def word_contributions(
        self,
        train_text: str,
        train_label: int | str,
        test_text: str,
        test_label: int | str | None = None,
        train_pair: str | None = None,
        test_pair: str | None = None,
    ) -> list[WordContribution]:
        """Each shared token's contribution to the (train, test) score, largest magnitude first.

        The contributions sum to ``scores([train_text], ..., [test_text], ...)[0, 0]``.
        """
        if test_label is None:
            test_label = int(self.predict([test_text], [test_pair] if test_pair is not None else None)[0].argmax())
        if (train_pair is None) != (test_pair is None):
            train = self.capture([train_text], [train_label], [train_pair] if train_pair is not None else None, role="train")
            test = self.capture([test_text], [test_label], [test_pair] if test_pair is not None else None)
            return self.explain_pair(train, test, train_text, test_text, train_pair=train_pair, test_pair=test_pair)
        pairs = None if train_pair is None else [train_pair, test_pair]
        both = self.capture([train_text, test_text], [train_label, test_label], pairs, role="train/test")
        return self.explain_pair(both, both, train_text, test_text, 0, 1, train_pair=train_pair, test_pair=test_pair)

    def explain_pair(
        self,
        train: Sequence[TokenGradients],
        test: Sequence[TokenGradients],
        train_text: str,
        test_text: str,
        train_index: int = 0,
        test_index: int = 0,
        train_pair: str | None = None,
        test_pair: str | None = None,
    ) -> list[WordContribution]:
        """Word contributions from already captured records (no new forward passes)."""
        totals = token_contributions(train, test, self.learning_rates, train_index, test_index)
        clf = self.final
        train_ids = clf.tokenize([train_text], [train_pair] if train_pair is not None else None)["input_ids"][0].tolist()
        test_ids = clf.tokenize([test_text], [test_pair] if test_pair is not None else None)["input_ids"][0].tolist()
        return word_contributions(totals, clf.token_strings(sorted(totals)), train_ids, test_ids)
