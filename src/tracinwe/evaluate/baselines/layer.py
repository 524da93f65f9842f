"""Dense TracIn on a set of parameters (small models); `TracInLayer`: on one named block, the layer comparison."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator

import torch

from tracinwe.capture.gradients import prepared_for_capture
from tracinwe.errors import TracInWEError
from tracinwe.method import CheckpointMethod, Examples
from tracinwe.models.contract import TextClassifier

#: Above this many parameters per example the dense gradients are refused (use TracIn-WE instead).
MAX_DENSE_PARAMETERS = 20_000_000


class DenseTracIn(CheckpointMethod):
    """TracIn with dense per-example gradients of a set of parameters: ``sum_c lr_c g(x) . g(x')``. > 0 = proponent.

    A subclass says which parameters (`block_names`); one backward pass per example, so small models only.
    """

    #: The most parameters per example this method accepts.
    max_parameters: int = MAX_DENSE_PARAMETERS

    @abstractmethod
    def block_names(self, classifier: TextClassifier) -> list[str]:
        """Names of the parameters whose gradients are compared."""

    def parameter_names(self, classifier: TextClassifier) -> list[str]:
        """`block_names`, refused with a one-line error when they hold more than `max_parameters`."""
        names = self.block_names(classifier)
        params = dict(classifier.module.named_parameters())
        size = sum(params[n].numel() for n in names)
        if size > self.max_parameters:
            raise TracInWEError(
                f"{self.name}: {size:,} parameters, over the limit of {self.max_parameters:,} for dense per-example "
                "gradients: pick a smaller block (TracIn@<block>) or use TracIn-WE"
            )
        return names

    def represent_chunks(self, c: int, examples: Examples) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, grads (b, P) float64)`` for consecutive chunks of examples at checkpoint ``c``."""
        clf = self.classifier(c)
        names = self.parameter_names(clf)
        with prepared_for_capture(clf.module, self.device):
            params = dict(clf.module.named_parameters())
            block = [params[n] for n in names]
            for p in block:
                p.requires_grad_(True)
            run_device = block[0].device
            for start in range(0, len(examples), self.batch_size):
                rows = []
                for i in range(start, min(start + self.batch_size, len(examples))):
                    batch = {k: v.to(run_device) for k, v in clf.tokenize([examples.texts[i]]).items()}
                    with torch.enable_grad():
                        logits = clf.logits(batch)
                        label = torch.tensor([examples.labels[i]], device=run_device)
                        grads = torch.autograd.grad(clf.per_example_loss(logits, label).sum(), block, allow_unused=True)
                    rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()  # unused: zero gradient
                                           for g, p in zip(grads, block)]).double().cpu())
                yield start, torch.stack(rows)

    def represent(self, c: int, examples: Examples) -> torch.Tensor:
        return torch.cat([g for _, g in self.represent_chunks(c, examples)])

    def compare(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return queries @ keys.T

    def diagonal(self, rep: torch.Tensor) -> torch.Tensor:
        return (rep ** 2).sum(1)


class TracInLayer(DenseTracIn):
    """TracIn restricted to the parameters whose names start with ``layer_name``. > 0 = proponent.

    ``score(x, x') = sum_c lr_c grad_theta l(x) . grad_theta l(x')`` with theta the named block
    (e.g. ``"conv1"``, ``"bert.encoder.layer.0"``, ``"classifier"``).
    """

    def __init__(self, layer_name: str, models, tokenizer=None, max_length: int = 128,
                 batch_size: int = 256, device: str | None = None) -> None:
        super().__init__(models, tokenizer, max_length, batch_size, device)
        self.layer_name = layer_name
        self.name = f"TracIn-{layer_name}"
        for ckpt in self.checkpoints:  # folders are checked when loaded
            if ckpt.classifier is not None:
                self.parameter_names(ckpt.classifier)

    def block_names(self, classifier: TextClassifier) -> list[str]:
        """Names of the parameters in the block (one-line error listing the blocks if none match)."""
        names = [n for n, _ in classifier.module.named_parameters()
                 if n == self.layer_name or n.startswith(self.layer_name + ".")]
        if not names:
            blocks = sorted({n.rsplit(".", 1)[0] for n, _ in classifier.module.named_parameters()})
            raise TracInWEError(f"no parameters named {self.layer_name!r}*: pick one of {blocks[:20]}")
        return names
