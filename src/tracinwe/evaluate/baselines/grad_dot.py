"""Grad-Dot: the plain dot product of last-layer gradients at the final checkpoint."""

from __future__ import annotations

from tracinwe.evaluate.baselines.last_layer import TracInLastLayer


class GradDot(TracInLastLayer):
    """``grad l(x) . grad l(x')`` on the final layer's weight and bias, final checkpoint, no learning rate. > 0 = proponent.

    ``= (a.a')(delta.delta')``: TracIn-last with one checkpoint and weight 1.
    """

    name = "Grad-Dot"

    def checkpoint_weights(self) -> list[tuple[int, float]]:
        return self.final_checkpoint()
