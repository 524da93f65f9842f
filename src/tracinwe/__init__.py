"""tracinwe: which training examples made a text classifier say this, and through which words.

TracIn-WE (Yeh et al., NeurIPS 2022) applies TracIn to the input word-embedding
layer. Sign convention: a positive score marks a proponent (training on the
example lowered the test loss), a negative score an opponent.
"""

from tracinwe.capture import CaptureSettings, TokenGradients
from tracinwe.errors import CheckpointError, InputTextError, LabelError, TokenizerMismatchError, TracInWEError
from tracinwe.method import CheckpointMethod, InfluenceMethod
from tracinwe.models import HuggingFaceClassifier, TextClassifier, TorchTextClassifier
from tracinwe.results import TopInfluences
from tracinwe.scoring import SIGN_CONVENTION, WordContribution
from tracinwe.tracin import TracInWE

__version__ = "0.1.0"

__all__ = [
    "TracInWE",
    "InfluenceMethod",
    "CheckpointMethod",
    "TextClassifier",
    "TorchTextClassifier",
    "HuggingFaceClassifier",
    "CaptureSettings",
    "TokenGradients",
    "TopInfluences",
    "WordContribution",
    "SIGN_CONVENTION",
    "TracInWEError",
    "CheckpointError",
    "InputTextError",
    "LabelError",
    "TokenizerMismatchError",
]
