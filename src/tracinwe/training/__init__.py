"""Fine-tuning that saves checkpoints the TracIn way (each with its learning rate)."""

from tracinwe.training.loop import TrainConfig, TrainedRun, train_classifier

__all__ = ["TrainConfig", "TrainedRun", "train_classifier"]
