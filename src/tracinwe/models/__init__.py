"""The model contract: what TracIn-WE needs to know about a text classifier."""

from tracinwe.models.contract import TextClassifier, TorchTextClassifier
from tracinwe.models.huggingface import HuggingFaceClassifier, as_text_classifier

__all__ = ["TextClassifier", "TorchTextClassifier", "HuggingFaceClassifier", "as_text_classifier"]
