"""Dense TracIn on any named parameter block (small models): the layer-choice comparison."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tracinwe.capture.gradients import prepared_for_capture
from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines.base import CheckpointMethod, as_numpy
from tracinwe.models.contract import TextClassifier

#: Above this many parameters per example the dense gradients are refused (use TracIn-WE instead).
MAX_DENSE_PARAMETERS = 20_000_000


class TracInLayer(CheckpointMethod):
    """TracIn restricted to the parameters whose names start with ``layer_name``. > 0 = proponent.

    ``score(x, x') = sum_c lr_c grad_theta l(x) . grad_theta l(x')`` with theta the named block
    (e.g. ``"conv1"``, ``"bert.encoder.layer.0"``, ``"classifier"``). Per-example gradients are
    dense (one backward pass per example), so this is for small models.
    """

    def __init__(self, layer_name: str, models, tokenizer=None, max_length: int = 128,
                 batch_size: int = 256, device: str | None = None) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device)
        self.layer_name = layer_name
        self.name = f"TracIn-{layer_name}"
        for clf in self.classifiers:
            self.parameter_names(clf)

    def parameter_names(self, classifier: TextClassifier) -> list[str]:
        """Names of the parameters in the block (one-line error listing the blocks if none match)."""
        names = [n for n, _ in classifier.module.named_parameters()
                 if n == self.layer_name or n.startswith(self.layer_name + ".")]
        if not names:
            blocks = sorted({n.rsplit(".", 1)[0] for n, _ in classifier.module.named_parameters()})
            raise TracInWEError(f"no parameters named {self.layer_name!r}*: pick one of {blocks[:20]}")
        size = sum(dict(classifier.module.named_parameters())[n].numel() for n in names)
        if size > MAX_DENSE_PARAMETERS:
            raise TracInWEError(
                f"{self.layer_name!r} has {size:,} parameters, too many for dense per-example gradients: pick a smaller block"
            )
        return names

    def gradients(self, c: int, texts: Sequence[str], labels: Sequence[int]):
        """Yield ``(start, grads (b, P) float64)`` for consecutive chunks of examples at checkpoint ``c``."""
        clf = self.classifiers[c]
        names = self.parameter_names(clf)
        with prepared_for_capture(clf.module, self.device):
            params = dict(clf.module.named_parameters())
            block = [params[n] for n in names]
            for p in block:
                p.requires_grad_(True)
            run_device = block[0].device
            for start in range(0, len(texts), self.batch_size):
                rows = []
                for i in range(start, min(start + self.batch_size, len(texts))):
                    batch = {k: v.to(run_device) for k, v in clf.tokenize([texts[i]]).items()}
                    with torch.enable_grad():
                        logits = clf.logits(batch)
                        loss = clf.per_example_loss(logits, torch.tensor([labels[i]], device=run_device)).sum()
                        grads = torch.autograd.grad(loss, block)
                    rows.append(torch.cat([g.flatten() for g in grads]).double().cpu())
                yield start, torch.stack(rows)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        train_texts, train_labels = self.checked(train_texts, train_labels, "train")
        if train_labels is None:
            raise ValueError("train_labels are required")
        test_texts, test_labels = self.checked(test_texts, test_labels, "test")
        if test_labels is None:
            test_labels = self.predicted_labels(test_texts)
        out = torch.zeros(len(test_texts), len(train_texts), dtype=torch.float64)
        for c, lr in enumerate(self.learning_rates):
            test_grads = torch.cat([g for _, g in self.gradients(c, test_texts, test_labels)])
            for start, g in self.gradients(c, train_texts, train_labels):
                out[:, start : start + len(g)] += lr * (test_grads @ g.T)
        return as_numpy(out)

    def self_influence(self, texts, labels) -> np.ndarray:
        texts, labels = self.checked(texts, labels, "self_influence")
        out = torch.zeros(len(texts), dtype=torch.float64)
        for c, lr in enumerate(self.learning_rates):
            for start, g in self.gradients(c, texts, labels):
                out[start : start + len(g)] += lr * (g ** 2).sum(1)
        return as_numpy(out)
