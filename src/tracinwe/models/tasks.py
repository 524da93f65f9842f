"""Which kind of model a checkpoint holds: a text classifier or a decoder-only language model.

The facade takes either; `resolve_task` decides from the checkpoints themselves (a HF
``*ForCausalLM`` class or config, or a `CausalLanguageModel`) or checks a forced ``task``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tracinwe.errors import CheckpointError, TracInWEError
from tracinwe.models.causal_lm import folder_architecture, folder_is_causal_lm, is_causal_lm

CLASSIFICATION = "classification"
CAUSAL_LM = "causal-lm"
TASKS = (CLASSIFICATION, CAUSAL_LM)


def detected_task(model: object) -> str | None:
    """The task of one checkpoint: an (already checked) folder or an in-memory model; None when a folder's
    ``config.json`` names no architecture (it cannot tell)."""
    if isinstance(model, (str, Path)):
        if folder_architecture(model) is None:
            return None
        return CAUSAL_LM if folder_is_causal_lm(model) else CLASSIFICATION
    return CAUSAL_LM if is_causal_lm(model) else CLASSIFICATION


def describe(model: object) -> str:
    """A short name for a checkpoint in error messages."""
    if isinstance(model, (str, Path)):
        return f"checkpoint {str(model)!r} ({folder_architecture(model) or 'no architecture in config.json'})"
    return f"the in-memory {type(getattr(model, 'module', model)).__name__}"


def resolve_task(models: Sequence[object], task: str | None) -> str:
    """The task of a list of checkpoints: detected when ``task`` is None, else checked; one-line errors.

    Folders whose ``config.json`` names no architecture follow the others (classification when all are such).
    """
    if task is not None and task not in TASKS:
        raise TracInWEError(f"task {task!r} is not one of {', '.join(TASKS)}: pass one of them or None to detect it")
    detected = [detected_task(m) for m in models]
    if task is None:
        known = {d for d in detected if d is not None}
        if len(known) > 1:
            raise CheckpointError(
                "checkpoints mix causal language models and classifiers: pass the checkpoints of one training run"
            )
        return known.pop() if known else CLASSIFICATION
    for model, found in zip(models, detected):
        if found is None or found == task:
            continue
        if task == CAUSAL_LM:
            raise CheckpointError(
                f"{describe(model)} is not a causal language model: pass AutoModelForCausalLM checkpoints "
                "or drop task='causal-lm'"
            )
        raise CheckpointError(f"{describe(model)} is a causal language model: pass task='causal-lm' or None")
    return task
