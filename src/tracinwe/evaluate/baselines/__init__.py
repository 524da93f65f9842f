"""Influence baselines, each a `tracinwe.method.CheckpointMethod` like TracIn-WE: (n_test, n_train) scores, > 0 = proponent.

One file per family; a new baseline is one new file here plus one line in `tracinwe.evaluate.registry.METHODS`.
"""

from tracinwe.evaluate.baselines.last_layer import (
    GradCosLastLayer,
    InfluenceFunctionLastLayer,
    LastLayerMethod,
    RepresenterPoints,
    TracInLastLayer,
    last_layer_hessian,
)
from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords, find_final_linear, last_layer_records
from tracinwe.evaluate.baselines.layer import DenseTracIn, TracInLayer
from tracinwe.evaluate.baselines.simple import LossSelfInfluence, RandomInfluence, TracInWEMethod
from tracinwe.evaluate.baselines.tfidf import TfIdfVariant

__all__ = [
    "TracInWEMethod",
    "TracInLastLayer",
    "RepresenterPoints",
    "InfluenceFunctionLastLayer",
    "GradCosLastLayer",
    "TfIdfVariant",
    "DenseTracIn",
    "TracInLayer",
    "RandomInfluence",
    "LossSelfInfluence",
    "LastLayerMethod",
    "LastLayerRecords",
    "find_final_linear",
    "last_layer_records",
    "last_layer_hessian",
]
