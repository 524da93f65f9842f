"""Influence baselines behind one interface with TracIn-WE: ``scores(train, test) -> (n_test, n_train)``, > 0 = proponent."""

from tracinwe.evaluate.baselines.base import CheckpointMethod, InfluenceMethod
from tracinwe.evaluate.baselines.last_layer import (
    GradCosLastLayer,
    InfluenceFunctionLastLayer,
    RepresenterPoints,
    TracInLastLayer,
    last_layer_hessian,
)
from tracinwe.evaluate.baselines.last_layer_records import LastLayerRecords, find_final_linear, last_layer_records
from tracinwe.evaluate.baselines.layer import TracInLayer
from tracinwe.evaluate.baselines.simple import LossSelfInfluence, RandomInfluence, TracInWEMethod
from tracinwe.evaluate.baselines.tfidf import TfIdfVariant

__all__ = [
    "InfluenceMethod",
    "CheckpointMethod",
    "TracInWEMethod",
    "TracInLastLayer",
    "RepresenterPoints",
    "InfluenceFunctionLastLayer",
    "GradCosLastLayer",
    "TfIdfVariant",
    "TracInLayer",
    "RandomInfluence",
    "LossSelfInfluence",
    "LastLayerRecords",
    "find_final_linear",
    "last_layer_records",
    "last_layer_hessian",
]
