"""One model shared by several capturing threads: its modes, its flags and the lookup tap.

The first thread to enter `prepared_for_capture` on a model puts it in eval
mode with no weight gradients (on the requested device); the last one to leave
restores every module's mode and every parameter's ``requires_grad`` (and its
device). A `LookupOutputTap` records only the lookups of the thread that opened
it, so concurrent forward passes through one model never mix their captures.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

_LOCK = threading.Lock()


@dataclass
class _Prepared:
    """A model while at least one capture uses it."""

    device: torch.device | None  # where it runs during the capture
    restore: Callable[[], None]
    users: int = 0


_PREPARED: dict[int, _Prepared] = {}  # by id(module); an entry holds the module alive through `restore`


def _prepare(module: nn.Module, device: str | torch.device | None) -> _Prepared:
    """Eval mode, no weight gradients, on `device`; returns how to undo it."""
    modes = [(m, m.training) for m in module.modules()]
    flags = [(p, p.requires_grad) for p in module.parameters()]
    first = next(module.parameters(), None)
    original_device = first.device if first is not None else None
    move = device is not None and original_device is not None and torch.device(device) != original_device
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    if move:
        module.to(device)

    def restore() -> None:
        if move:
            module.to(original_device)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode

    now = next(module.parameters(), None)
    return _Prepared(now.device if now is not None else None, restore)


def _same_device(wanted: str | torch.device | None, current: torch.device | None) -> bool:
    if wanted is None or current is None:
        return True
    wanted = torch.device(wanted)
    return wanted.type == current.type and (wanted.index is None or wanted.index == current.index)


@contextmanager
def prepared_for_capture(module: nn.Module, device: str | torch.device | None) -> Iterator[None]:
    """Eval mode, no weight gradients, on `device`; restores everything when the last user leaves.

    Safe to enter from several threads at once on the same model (all on one device).
    """
    key = id(module)
    with _LOCK:
        state = _PREPARED.get(key)
        if state is None:
            state = _PREPARED[key] = _prepare(module, device)
        elif not _same_device(device, state.device):
            raise RuntimeError(
                f"the model is in use on {state.device} by another capture; capture on one device at a time (asked for {device})"
            )
        state.users += 1
    try:
        yield
    finally:
        with _LOCK:
            state.users -= 1
            if state.users == 0:
                del _PREPARED[key]
                state.restore()


class LookupOutputTap:
    """Forward hook that makes this thread's embedding lookup output a differentiable leaf and keeps it."""

    def __init__(self, embedding: nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        self._thread = threading.get_ident()
        self._handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != self._thread:  # another thread's forward pass through the same model
            return None
        leaf = output.detach().requires_grad_(True)
        self.outputs.append(leaf)
        return leaf

    def take(self) -> torch.Tensor:
        if len(self.outputs) != 1:
            raise RuntimeError(
                f"the embedding lookup ran {len(self.outputs)} times in one forward pass; "
                "TextClassifier.embedding must be the module called once per batch"
            )
        return self.outputs.pop()

    def close(self) -> None:
        self._handle.remove()
