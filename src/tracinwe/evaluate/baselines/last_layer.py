"""Baselines on the final linear layer: TracIn-last, Grad-Cos, Representer points, influence functions.

All use ``a`` (the final layer's input with a 1 appended for the bias) and
``delta = dloss/dlogits`` (see `last_layer_records`), and all return
``(n_test, n_train)`` with **> 0 = proponent**.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tracinwe.evaluate.baselines.base import CheckpointMethod, as_numpy
from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords, last_layer_records


class _LastLayerMethod(CheckpointMethod):
    """Shared plumbing: last-layer records of every checkpoint for a set of texts."""

    def __init__(self, models, tokenizer=None, max_length: int = 128, batch_size: int = 32,
                 device: str | None = None, final_layers: Sequence[nn.Module] | None = None) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device)
        if final_layers is not None and len(final_layers) != len(self.classifiers):
            raise ValueError(f"{len(final_layers)} final layers for {len(self.classifiers)} checkpoints: pass one per checkpoint")
        self.final_layers = list(final_layers) if final_layers is not None else [None] * len(self.classifiers)

    def records(self, c: int, texts: Sequence[str], labels: Sequence[int] | None) -> LastLayerRecords:
        return last_layer_records(self.classifiers[c], texts, labels, self.batch_size, self.device, self.final_layers[c])

    def _both(self, c, train_texts, train_labels, test_texts, test_labels):
        return self.records(c, train_texts, train_labels), self.records(c, test_texts, test_labels)

    def _inputs(self, train_texts, train_labels, test_texts, test_labels):
        train_texts, train_labels = self.checked(train_texts, train_labels, "train")
        if train_labels is None:
            raise ValueError("train_labels are required")
        test_texts, test_labels = self.checked(test_texts, test_labels, "test")
        if test_labels is None:
            test_labels = self.predicted_labels(test_texts)
        return train_texts, train_labels, test_texts, test_labels


class TracInLastLayer(_LastLayerMethod):
    """TracIn on the final linear layer (weight and bias): ``sum_c lr_c (a.a')(delta.delta')``. > 0 = proponent."""

    name = "TracIn-last"

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        args = self._inputs(train_texts, train_labels, test_texts, test_labels)
        total = 0.0
        for c, lr in enumerate(self.learning_rates):
            tr, te = self._both(c, *args)
            total = total + lr * (te.activations @ tr.activations.T) * (te.loss_grads @ tr.loss_grads.T)
        return as_numpy(total)

    def self_influence(self, texts, labels) -> np.ndarray:
        texts, labels = self.checked(texts, labels, "self_influence")
        total = 0.0
        for c, lr in enumerate(self.learning_rates):
            r = self.records(c, texts, labels)
            total = total + lr * (r.activations ** 2).sum(1) * (r.loss_grads ** 2).sum(1)
        return as_numpy(total)


class GradCosLastLayer(_LastLayerMethod):
    """Cosine of last-layer gradients, averaged over checkpoints with learning-rate weights. > 0 = proponent.

    ``cos(g, g') = (a.a')(delta.delta') / (|a||delta| |a'||delta'|)`` because ``|delta a^T| = |delta||a|``.
    """

    name = "Grad-Cos-last"

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        args = self._inputs(train_texts, train_labels, test_texts, test_labels)
        total = 0.0
        for c, lr in enumerate(self.learning_rates):
            tr, te = self._both(c, *args)
            dots = (te.activations @ tr.activations.T) * (te.loss_grads @ tr.loss_grads.T)
            norm_te = te.activations.norm(dim=1) * te.loss_grads.norm(dim=1)
            norm_tr = tr.activations.norm(dim=1) * tr.loss_grads.norm(dim=1)
            total = total + lr * dots / (norm_te[:, None] * norm_tr[None, :]).clamp_min(1e-30)
        return as_numpy(total / sum(self.learning_rates))


class RepresenterPoints(_LastLayerMethod):
    """Representer points (Yeh et al., 2018) at the final checkpoint. > 0 = proponent.

    ``score(x, x') = alpha_j(x) a(x).a(x')`` with ``alpha_j(x) = -(1 / (2 lambda n)) dloss(x)/df_j``
    and ``j`` the class explained (the test label, or the prediction). A training example of class
    ``j`` has ``alpha_j > 0``: it pushes the logit of ``j`` up wherever its features align with the
    test example's, so this is already oriented as a proponent score.

    Args:
        l2: the L2 strength lambda of the last layer (scales all scores, rankings do not change).
    """

    name = "Representer"

    def __init__(self, models, tokenizer=None, max_length: int = 128, batch_size: int = 32,
                 device: str | None = None, final_layers=None, l2: float = 0.01) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device, final_layers)
        if l2 <= 0:
            raise ValueError(f"l2 must be positive, got {l2}")
        self.l2 = float(l2)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        train_texts, train_labels, test_texts, test_labels = self._inputs(train_texts, train_labels, test_texts, test_labels)
        c = len(self.classifiers) - 1
        tr, te = self._both(c, train_texts, train_labels, test_texts, test_labels)
        n = len(train_texts)
        alpha = -tr.loss_grads / (2.0 * self.l2 * n)  # (n_train, C)
        j = torch.as_tensor(test_labels, dtype=torch.long)
        return as_numpy(alpha[:, j].T * (te.activations @ tr.activations.T))


class InfluenceFunctionLastLayer(_LastLayerMethod):
    """Influence functions on the final layer (Koh & Liang, 2017) with an exact damped Hessian solve.

    ``score(x, x') = grad l(x)^T (H + damping I)^{-1} grad l(x')`` with ``H`` the Hessian of the mean
    training loss with respect to ``[W | b]`` of the final checkpoint. This is minus Koh & Liang's
    ``I_up,loss`` (the change of the test loss when ``x`` is up-weighted), so **> 0 = proponent**.

    Args:
        damping: added to the Hessian's diagonal (softmax makes it singular).
    """

    name = "IF-last"

    def __init__(self, models, tokenizer=None, max_length: int = 128, batch_size: int = 32,
                 device: str | None = None, final_layers=None, damping: float = 0.01) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device, final_layers)
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.damping = float(damping)

    def scores(self, train_texts, train_labels, test_texts, test_labels=None) -> np.ndarray:
        args = self._inputs(train_texts, train_labels, test_texts, test_labels)
        tr, te = self._both(len(self.classifiers) - 1, *args)
        h = last_layer_hessian(tr) + self.damping * torch.eye(tr.activations.shape[1] * tr.logits.shape[1], dtype=torch.float64)
        solved = torch.linalg.solve(h, te.gradients().T)  # (P, n_test)
        return as_numpy(solved.T @ tr.gradients().T)


def last_layer_hessian(records: LastLayerRecords) -> torch.Tensor:
    """Hessian of the mean cross-entropy w.r.t. ``[W | b]`` flattened class-major: (C(D+1), C(D+1)).

    ``H = (1/n) sum_i (diag(p_i) - p_i p_i^T) kron (a_i a_i^T)``.
    """
    p = records.probabilities
    a = records.activations
    n, d = a.shape
    classes = p.shape[1]
    curvature = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (n, C, C)
    h = torch.empty(classes, d, classes, d, dtype=torch.float64)
    for i in range(classes):
        for j in range(classes):
            h[i, :, j, :] = (a * curvature[:, i, j, None]).T @ a / n
    return h.reshape(classes * d, classes * d)
