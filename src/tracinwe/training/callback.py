"""A HuggingFace `Trainer` callback that makes its checkpoints TracIn checkpoints.

TracIn needs each checkpoint's learning rate. Add the callback to your own
``Trainer`` and every ``checkpoint-STEP`` folder gets a ``tracinwe_checkpoint.json``
with the learning rate of the steps that led to it, so
``TracInWE.from_checkpoints(folders)`` needs nothing else::

    trainer = Trainer(model, args, train_dataset=..., processing_class=tokenizer,
                      callbacks=[TracInCheckpointCallback()])
"""

from __future__ import annotations

import os

from transformers import TrainerCallback

from tracinwe.models.checkpoints import write_checkpoint_info

__all__ = ["TracInCheckpointCallback", "current_learning_rate"]


def current_learning_rate(optimizer=None, lr_scheduler=None) -> float | None:
    """The learning rate the Trainer reports (the scheduler's last value), else the optimizer's."""
    if lr_scheduler is not None and hasattr(lr_scheduler, "get_last_lr"):
        last = lr_scheduler.get_last_lr()
        if last:
            return float(last[0])
    if optimizer is not None and optimizer.param_groups:
        return float(optimizer.param_groups[0]["lr"])
    return None


class TracInCheckpointCallback(TrainerCallback):
    """Write the learning rate of each checkpoint's interval beside the checkpoint (``on_save``).

    TracIn weighs checkpoint ``c`` by the step size used between checkpoints ``c-1`` and ``c``.
    The callback reads the optimizer's rate at the start of every update step and records
    their mean over the interval: the rate itself under a constant schedule, and never the 0
    a linear schedule reaches at its last step. Without any recorded step (a save before
    training), the current rate is written.
    """

    def __init__(self) -> None:
        self.saved: list[str] = []  # checkpoint folders written during this run
        self._interval: list[float] = []

    def on_step_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        lr = current_learning_rate(optimizer, None)
        if lr is not None:
            self._interval.append(lr)
        return control

    def on_save(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        lr = sum(self._interval) / len(self._interval) if self._interval else current_learning_rate(optimizer, lr_scheduler)
        self._interval = []
        if not getattr(args, "should_save", True) or lr is None or not os.path.isdir(folder):
            return control
        write_checkpoint_info(folder, learning_rate=lr, step=int(state.global_step), epoch=state.epoch)
        self.saved.append(folder)
        return control
