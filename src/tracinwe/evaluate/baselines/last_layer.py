"""Baselines on the final linear layer: TracIn-last, Grad-Cos, Representer points, influence functions.

All use ``a`` (the final layer's input with a 1 appended for the bias) and
``delta = dloss/dlogits`` (see `last_layer_records`), and all return
``(n_test, n_train)`` with **> 0 = proponent**.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords, last_layer_records
from tracinwe.method import CheckpointMethod, Examples


class LastLayerMethod(CheckpointMethod):
    """A method whose representation of the examples is their `LastLayerRecords` (a and delta) at a checkpoint.

    Args:
        final_layers: the logits layer of each checkpoint (default: found by `find_final_linear`).
    """

    def __init__(self, models, tokenizer=None, max_length: int = 128, batch_size: int = 32,
                 device: str | None = None, final_layers: Sequence[nn.Module] | None = None) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device)
        if final_layers is not None and len(final_layers) != len(self.checkpoints):
            raise ValueError(f"{len(final_layers)} final layers for {len(self.checkpoints)} checkpoints: pass one per checkpoint")
        self.final_layers = list(final_layers) if final_layers is not None else [None] * len(self.checkpoints)

    def represent(self, c: int, examples: Examples) -> LastLayerRecords:
        return last_layer_records(self.classifier(c), examples.texts, examples.labels, self.batch_size, self.device,
                                  self.final_layers[c])


def last_layer_dots(queries: LastLayerRecords, keys: LastLayerRecords) -> torch.Tensor:
    """Dot products of the last-layer gradients ``delta a^T``: ``(a.a')(delta.delta')`` (n_queries, n_keys)."""
    return (queries.activations @ keys.activations.T) * (queries.loss_grads @ keys.loss_grads.T)


def last_layer_squared_norms(records: LastLayerRecords) -> torch.Tensor:
    """``|delta a^T|^2 = |a|^2 |delta|^2`` per example."""
    return (records.activations ** 2).sum(1) * (records.loss_grads ** 2).sum(1)


class TracInLastLayer(LastLayerMethod):
    """TracIn on the final linear layer (weight and bias): ``sum_c lr_c (a.a')(delta.delta')``. > 0 = proponent."""

    name = "TracIn-last"

    def compare(self, queries: LastLayerRecords, keys: LastLayerRecords) -> torch.Tensor:
        return last_layer_dots(queries, keys)

    def diagonal(self, rep: LastLayerRecords) -> torch.Tensor:
        return last_layer_squared_norms(rep)


class GradCosLastLayer(LastLayerMethod):
    """Cosine of last-layer gradients, averaged over checkpoints with learning-rate weights. > 0 = proponent.

    ``cos(g, g') = (a.a')(delta.delta') / (|a||delta| |a'||delta'|)`` because ``|delta a^T| = |delta||a|``.
    """

    name = "Grad-Cos-last"

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        total = sum(self.learning_rates)
        return [(c, lr / total) for c, lr in enumerate(self.learning_rates)]

    def compare(self, queries: LastLayerRecords, keys: LastLayerRecords) -> torch.Tensor:
        norms_q, norms_k = last_layer_squared_norms(queries).sqrt(), last_layer_squared_norms(keys).sqrt()
        return last_layer_dots(queries, keys) / (norms_q[:, None] * norms_k[None, :]).clamp_min(1e-30)


class RepresenterPoints(LastLayerMethod):
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

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        return self.final_checkpoint()

    def compare(self, queries: LastLayerRecords, keys: LastLayerRecords) -> torch.Tensor:
        alpha = -keys.loss_grads / (2.0 * self.l2 * len(keys.labels))  # (n_train, C): keys hold the whole training set
        return alpha[:, queries.labels].T * (queries.activations @ keys.activations.T)


class InfluenceFunctionLastLayer(LastLayerMethod):
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

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        return self.final_checkpoint()

    def compare(self, queries: LastLayerRecords, keys: LastLayerRecords) -> torch.Tensor:
        size = keys.activations.shape[1] * keys.logits.shape[1]
        h = last_layer_hessian(keys) + self.damping * torch.eye(size, dtype=torch.float64)  # keys: the whole training set
        solved = torch.linalg.solve(h, queries.gradients().T)  # (P, n_test)
        return solved.T @ keys.gradients().T


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
