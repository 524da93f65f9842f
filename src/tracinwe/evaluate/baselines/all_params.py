"""TracIn over every parameter of the model (dense, so small models only)."""

from __future__ import annotations

from tracinwe.evaluate.baselines.layer import DenseTracIn
from tracinwe.models.contract import TextClassifier

#: Dense per-example gradients of every parameter are refused above this size.
MAX_ALL_PARAMETERS = 5_000_000


class TracInAllParameters(DenseTracIn):
    """TracIn on all parameters: ``sum_c lr_c grad_theta l(x) . grad_theta l(x')``. > 0 = proponent.

    Per-example gradients are dense (one backward pass per example, P floats each), so a model
    with more than ``max_parameters`` parameters is refused with a one-line error.
    """

    name = "TracIn-all-params"

    def __init__(self, models, tokenizer=None, max_length: int = 128, batch_size: int = 64,
                 device: str | None = None, max_parameters: int = MAX_ALL_PARAMETERS) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device)
        self.max_parameters = int(max_parameters)
        for ckpt in self.checkpoints:  # folders are checked when loaded
            if ckpt.classifier is not None:
                self.parameter_names(ckpt.classifier)

    def block_names(self, classifier: TextClassifier) -> list[str]:
        return [n for n, _ in classifier.module.named_parameters()]
