"""The one user contract: a text classifier with a word-embedding lookup.

TracIn-WE needs four things from a model: the module whose *output* is the
word-embedding lookup (gradients are taken with respect to that output, never
the weight), a way to turn texts into a batch of token ids, a way to get
logits from a batch, and the number of classes. HuggingFace models satisfy it
with no code (`HuggingFaceClassifier`); any other PyTorch model is wrapped in
`TorchTextClassifier` or implements `TextClassifier` itself.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence

import torch
from torch import nn

from tracinwe.models.prefix import encode_truncated, padded_arrays

Batch = dict[str, torch.Tensor]


class TextClassifier(ABC):
    """What TracIn-WE needs from a model. Subclass it for a custom model."""

    #: The whole model (its mode and ``requires_grad`` flags are restored after use).
    module: nn.Module
    #: Optional: the HuggingFace tokenizer behind `tokenize`, if any. A fast one lets the
    #: report and the explorer put token contributions back on the words of a text.
    tokenizer: object | None = None

    @property
    @abstractmethod
    def embedding(self) -> nn.Module:
        """The word-embedding lookup; its forward output (B, T, d) is differentiated."""

    @property
    @abstractmethod
    def num_classes(self) -> int:
        """Number of output classes."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> Batch:
        """Token ids for a batch: at least ``input_ids`` and ``attention_mask`` (B, T)."""

    def tokenization_key(self) -> Hashable | None:
        """Equal keys promise equal `tokenize` output for every text, so checkpoints can share one
        tokenisation; None (the default) promises nothing."""
        return None

    @abstractmethod
    def logits(self, batch: Batch) -> torch.Tensor:
        """Run the model on a batch and return logits (B, num_classes)."""

    def per_example_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of each example (B,); cross-entropy of the given label by default."""
        return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")

    def batch_losses(self, batch: Batch, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss of each example (B,), logits kept in the records (B, C), labels differentiated (B,))``.

        Default: `per_example_loss` of ``labels`` (the predicted label where None). A model that
        computes its own loss from the batch (a language model: the text is its own target) overrides it.
        """
        logits = self.logits(batch)
        target = logits.argmax(dim=-1) if labels is None else labels.to(logits.device)
        return self.per_example_loss(logits, target), logits, target

    @property
    def special_token_ids(self) -> frozenset[int]:
        """Ids of special tokens such as [CLS] and [SEP] (kept by default)."""
        return frozenset()

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Readable strings for token ids (used by word-level explanations)."""
        return [str(int(t)) for t in token_ids]

    @property
    def vocab_size(self) -> int:
        """Rows of the word-embedding table."""
        weight = getattr(self.embedding, "weight", None)
        if weight is None:
            raise TypeError("embedding module has no .weight; override vocab_size")
        return int(weight.shape[0])

    def label_id(self, label: int | str) -> int:
        """Map a label (class index, or class name where the model knows names) to an index."""
        if isinstance(label, str):
            raise TypeError(f"label {label!r} is a string but this model has no class names; pass class indices")
        return int(label)

    def fingerprint_parts(self) -> dict[str, str]:
        """Descriptive fields recorded in manifests (model class, tokenizer name)."""
        return {"model_class": type(self.module).__name__}


class TorchTextClassifier(TextClassifier):
    """Adapter for any PyTorch classifier with an embedding lookup.

    Args:
        module: the model.
        embedding: the lookup module inside ``module`` (e.g. ``module.embed``).
        tokenize: texts (and optional pairs) -> dict with ``input_ids`` and ``attention_mask``.
            A HuggingFace tokenizer works: pass ``hf_tokenizer`` instead (kept as ``.tokenizer``).
        forward: batch -> logits; default ``module(batch["input_ids"])``.
        num_classes: number of classes.
        special_token_ids: ids kept as special tokens ([CLS]/[SEP]).
        id_to_token: ids -> strings for explanations.
    """

    def __init__(
        self,
        module: nn.Module,
        embedding: nn.Module,
        num_classes: int,
        tokenize: Callable[[Sequence[str], Sequence[str] | None], Mapping[str, torch.Tensor]] | None = None,
        forward: Callable[[Batch], torch.Tensor] | None = None,
        hf_tokenizer=None,
        max_length: int = 128,
        special_token_ids: Sequence[int] = (),
        id_to_token: Callable[[Sequence[int]], list[str]] | None = None,
    ) -> None:
        if tokenize is None and hf_tokenizer is None:
            raise ValueError("TorchTextClassifier needs tokenize= or hf_tokenizer=")
        self.module = module
        self._embedding = embedding
        self._num_classes = int(num_classes)
        self._tokenize = tokenize
        self._forward = forward
        self.tokenizer = hf_tokenizer
        self.max_length = max_length
        specials = set(special_token_ids)
        if hf_tokenizer is not None and not special_token_ids:
            specials = set(hf_tokenizer.all_special_ids) - {hf_tokenizer.pad_token_id}
        self._specials = frozenset(int(s) for s in specials)
        self._id_to_token = id_to_token

    @property
    def embedding(self) -> nn.Module:
        return self._embedding

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def special_token_ids(self) -> frozenset[int]:
        return self._specials

    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> Batch:
        if self._tokenize is not None:
            return {k: torch.as_tensor(v) for k, v in self._tokenize(texts, text_pairs).items()}
        if text_pairs is None:  # long texts from a prefix, in one call: the same ids
            enc = encode_truncated(self.tokenizer, texts, self.max_length, ("input_ids", "attention_mask"))
            return {k: torch.from_numpy(v) for k, v in enc.items()}
        enc = padded_arrays(self.tokenizer, texts, text_pairs, self.max_length, ("input_ids", "attention_mask"))
        return {k: torch.from_numpy(v) for k, v in enc.items()}

    def tokenization_key(self) -> Hashable | None:
        if self._tokenize is not None:
            return ("callable", id(self._tokenize))
        return ("huggingface", hf_tokenizer_key(self.tokenizer), self.max_length)

    def logits(self, batch: Batch) -> torch.Tensor:
        if self._forward is not None:
            return self._forward(batch)
        return self.module(batch["input_ids"])

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        if self._id_to_token is not None:
            return self._id_to_token(token_ids)
        if self.tokenizer is not None:
            return self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])
        return super().token_strings(token_ids)


_DEFINITION_HASHES: dict[int, tuple[object, int, str]] = {}


def hf_tokenizer_key(tokenizer) -> tuple:
    """What decides a HuggingFace tokenizer's output: its full serialised definition (fast tokenizers) and settings.

    The definition's hash is computed once per tokenizer object and vocabulary size.
    """
    size = len(tokenizer)
    cached = _DEFINITION_HASHES.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer and cached[1] == size:
        identity = cached[2]
    else:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # minus the truncation/padding state that the last call left behind
            definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
            identity = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
        else:
            identity = f"object-{id(tokenizer)}"
        if len(_DEFINITION_HASHES) > 64:
            _DEFINITION_HASHES.clear()
        _DEFINITION_HASHES[id(tokenizer)] = (tokenizer, size, identity)
    return (type(tokenizer).__name__, identity, size, tokenizer.padding_side, tokenizer.truncation_side, tokenizer.pad_token_id)
