"""Errors with one-line messages that name the problem and the fix."""

from __future__ import annotations


class TracInWEError(ValueError):
    """Base class: bad input, a mismatched model, a damaged file."""


class CheckpointError(TracInWEError):
    """A checkpoint is missing, unreadable or inconsistent with the others."""


class TokenizerMismatchError(TracInWEError):
    """The tokenizer's vocabulary does not fit the model's word embedding."""


class LabelError(TracInWEError):
    """A label is outside the model's classes."""


class InputTextError(TracInWEError):
    """A text is empty or not a string."""
