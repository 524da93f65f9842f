"""Gradient capture: per-example gradients of the loss w.r.t. the word-embedding lookup output."""

from tracinwe.capture.gradients import CaptureSettings, capture_token_gradients, iter_token_gradients
from tracinwe.capture.records import TokenGradients

__all__ = ["TokenGradients", "CaptureSettings", "capture_token_gradients", "iter_token_gradients"]
