"""One registry of influence methods by name, shared by case deletion, LDS, fixing mistakes and mislabels.

Adding a baseline is one new file in `tracinwe.evaluate.baselines` plus one line in `METHODS`
(``baseline("<module>.<Class>", **options)`` imports it when first built). Names with a parameter:
``TracIn-WE-Top<k>`` (TracIn-WE keeping the k largest positions) and ``TracIn@<block>`` (dense
TracIn on one named parameter block, e.g. ``TracIn@bert.encoder.layer.0``: the layer comparison).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines import RandomInfluence, TracInLayer, TracInWEMethod
from tracinwe.method import InfluenceMethod


@dataclass(frozen=True)
class MethodContext:
    """What a method is built from: the checkpoints ``[(model, lr), ...]`` of one run, and its tokenizer."""

    models: Sequence[tuple[object, float]]
    tokenizer: object = None
    max_length: int = 128
    seed: int = 0
    middle_layer: str | None = None

    @property
    def common(self) -> dict:
        return {"tokenizer": self.tokenizer, "max_length": self.max_length}


def _middle(ctx: MethodContext) -> InfluenceMethod:
    if ctx.middle_layer is None:
        raise TracInWEError("TracIn-middle needs a middle layer: pass middle_layer (a parameter block name)")
    return _named(TracInLayer(ctx.middle_layer, ctx.models, batch_size=64, **ctx.common), "TracIn-middle")


def _named(method: InfluenceMethod, name: str) -> InfluenceMethod:
    method.name = name
    return method


def baseline(target: str, **options) -> Callable[[MethodContext], InfluenceMethod]:
    """Builds ``Class(ctx.models, **options)`` for ``target = "module.Class"`` of `tracinwe.evaluate.baselines`."""
    module, name = target.rsplit(".", 1)

    def build(ctx: MethodContext) -> InfluenceMethod:
        method_class = getattr(importlib.import_module(f"tracinwe.evaluate.baselines.{module}"), name)
        return method_class(ctx.models, **options, **ctx.common)

    return build


METHODS: dict[str, Callable[[MethodContext], InfluenceMethod]] = {
    "TracIn-WE": lambda ctx: TracInWEMethod.from_models(ctx.models, batch_size=64, **ctx.common),
    "TracIn-last": baseline("last_layer.TracInLastLayer", batch_size=128),
    "Representer": baseline("last_layer.RepresenterPoints"),
    "IF-last": baseline("last_layer.InfluenceFunctionLastLayer"),
    "Grad-Cos-last": baseline("last_layer.GradCosLastLayer"),
    "Grad-Dot": baseline("grad_dot.GradDot", batch_size=128),
    "TF-IDF": baseline("tfidf.TfIdfVariant"),
    "TracIn-middle": _middle,
    "TracIn-all-params": baseline("all_params.TracInAllParameters"),
    "loss": baseline("simple.LossSelfInfluence", batch_size=128),
    "random": lambda ctx: RandomInfluence(seed=ctx.seed),
}
TOP_K_PREFIX, LAYER_PREFIX = "TracIn-WE-Top", "TracIn@"


def check_method_names(names: Sequence[str]) -> tuple[str, ...]:
    """The names, validated (one-line error naming the known ones)."""
    unknown = [n for n in names if n not in METHODS and not _parametrised(n)]
    if unknown:
        raise TracInWEError(f"unknown methods {unknown}: pick from {list(METHODS)}, {TOP_K_PREFIX}<k> or {LAYER_PREFIX}<block>")
    return tuple(names)


def _parametrised(name: str) -> bool:
    if name.startswith(TOP_K_PREFIX):
        return name.removeprefix(TOP_K_PREFIX).isdigit() and int(name.removeprefix(TOP_K_PREFIX)) > 0
    return name.startswith(LAYER_PREFIX) and len(name) > len(LAYER_PREFIX)


def build_method(name: str, ctx: MethodContext) -> InfluenceMethod:
    """The method called ``name``, on the context's checkpoints; its ``.name`` is ``name``."""
    check_method_names([name])
    if name.startswith(TOP_K_PREFIX):
        k = int(name.removeprefix(TOP_K_PREFIX))
        return TracInWEMethod.from_models(ctx.models, top_k=k, batch_size=64, name=name, **ctx.common)
    if name.startswith(LAYER_PREFIX):
        return _named(TracInLayer(name.removeprefix(LAYER_PREFIX), ctx.models, batch_size=64, **ctx.common), name)
    return _named(METHODS[name](ctx), name)


def build_methods(names: Sequence[str], ctx: MethodContext) -> list[InfluenceMethod]:
    return [build_method(name, ctx) for name in check_method_names(names)]
