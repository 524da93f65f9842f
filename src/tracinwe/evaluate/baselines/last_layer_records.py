"""Last-layer quantities of a text classifier: the input of its final linear layer and dloss/dlogits.

For a final layer ``f = W h + b`` and cross-entropy loss, the gradient with
respect to ``[W | b]`` is the outer product ``delta a^T`` with ``a = [h, 1]``
and ``delta = softmax(f) - onehot(y) = dloss/df``. Every last-layer baseline
is built from ``a`` and ``delta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tracinwe.capture.gradients import prepared_for_capture
from tracinwe.errors import TracInWEError
from tracinwe.models.contract import TextClassifier


@dataclass
class LastLayerRecords:
    """Per example: ``activations`` a = [h, 1] (n, D+1), ``logits`` (n, C), ``loss_grads`` delta (n, C), ``labels`` (n,)."""

    activations: torch.Tensor
    logits: torch.Tensor
    loss_grads: torch.Tensor
    labels: torch.Tensor

    @property
    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)

    @property
    def losses(self) -> torch.Tensor:
        """Cross-entropy of the differentiated label per example (n,)."""
        return torch.nn.functional.cross_entropy(self.logits, self.labels, reduction="none")

    def gradients(self) -> torch.Tensor:
        """Flattened last-layer gradients vec(delta a^T) (n, C * (D+1)), class-major."""
        return (self.loss_grads[:, :, None] * self.activations[:, None, :]).flatten(1)


def find_final_linear(module: nn.Module, num_classes: int) -> nn.Linear:
    """The last `nn.Linear` (in registration order) whose ``out_features`` is the number of classes."""
    found = [m for m in module.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not found:
        raise TracInWEError(
            f"{type(module).__name__} has no nn.Linear with out_features={num_classes}: "
            "pass final_layer=<the linear module that produces the logits>"
        )
    return found[-1]


def last_layer_records(
    classifier: TextClassifier,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    batch_size: int = 32,
    device: str | None = None,
    final_layer: nn.Module | None = None,
) -> LastLayerRecords:
    """Forward `texts` in eval mode and record a, logits and delta (``labels=None``: the predicted class).

    Everything is returned as float64 on the CPU. The model is restored afterwards.
    """
    layer = final_layer if final_layer is not None else find_final_linear(classifier.module, classifier.num_classes)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach()))
    acts, logits_all = [], []
    try:
        with torch.no_grad(), prepared_for_capture(classifier.module, device):
            run_device = next(classifier.module.parameters()).device
            for b in range(0, len(texts), batch_size):
                batch = classifier.tokenize(list(texts[b : b + batch_size]))
                logits = classifier.logits({k: v.to(run_device) for k, v in batch.items()})
                if len(seen) != 1:
                    raise TracInWEError(
                        f"the final layer ran {len(seen)} times in one forward pass: pass final_layer=<the logits layer>"
                    )
                h = seen.pop().double().cpu()
                acts.append(torch.cat([h.flatten(1), torch.ones(h.shape[0], 1, dtype=torch.float64)], dim=1))
                logits_all.append(logits.double().cpu())
    finally:
        handle.remove()
    a, f = torch.cat(acts), torch.cat(logits_all)
    y = f.argmax(1) if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
    delta = torch.softmax(f, dim=1) - torch.nn.functional.one_hot(y, f.shape[1]).double()
    return LastLayerRecords(a, f, delta, y)
