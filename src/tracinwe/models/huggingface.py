"""HuggingFace sequence classifiers satisfy the contract with no user code."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn

from tracinwe.errors import LabelError, TokenizerMismatchError
from tracinwe.models.contract import Batch, TextClassifier, hf_tokenizer_key
from tracinwe.models.prefix import encode_truncated, padded_arrays, truncated_sources

#: A tokenizer whose size differs from the embedding rows by more than this is
#: a different vocabulary (models pad their tables to a multiple of 64 or 128).
_VOCAB_PADDING_SLACK = 128


class HuggingFaceClassifier(TextClassifier):
    """A ``transformers`` ``*ForSequenceClassification`` model and its tokenizer."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128, prefix_tokenization: bool = True) -> None:
        self.module = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.prefix_tokenization = prefix_tokenization and getattr(tokenizer, "is_fast", False)
        self._check_tokenizer()
        self._uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])

    def _check_tokenizer(self) -> None:
        rows = self.vocab_size
        size = len(self.tokenizer)
        name = getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__
        if size > rows or rows - size > _VOCAB_PADDING_SLACK:
            raise TokenizerMismatchError(
                f"tokenizer {name!r} has {size} tokens but the model's word embedding has {rows} rows: "
                "load the tokenizer saved with this checkpoint"
            )
        config_pad = getattr(self.module.config, "pad_token_id", None)
        tok_pad = self.tokenizer.pad_token_id
        if tok_pad is None:
            raise TokenizerMismatchError(
                f"tokenizer {name!r} has no padding token: set tokenizer.pad_token (e.g. to its eos token)"
            )
        if config_pad is not None and tok_pad is not None and config_pad != tok_pad and size != rows:
            raise TokenizerMismatchError(
                f"tokenizer {name!r} pads with id {tok_pad} but the model expects {config_pad}: "
                "load the tokenizer saved with this checkpoint"
            )

    @property
    def embedding(self) -> nn.Module:
        return self.module.get_input_embeddings()

    @property
    def num_classes(self) -> int:
        return int(self.module.config.num_labels)

    @property
    def special_token_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.tokenizer.all_special_ids) - {self.tokenizer.pad_token_id}

    def _truncated_sources(self, texts: Sequence[str]) -> list[str]:
        """Texts with very long ones replaced by a whitespace-cut prefix that still overflows max_length
        (`tracinwe.models.prefix`)."""
        return truncated_sources(self.tokenizer, texts, self.max_length)

    def tokenize(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> Batch:
        keys = ("input_ids", "attention_mask", "token_type_ids") if self._uses_token_types else ("input_ids", "attention_mask")
        if self.prefix_tokenization and text_pairs is None:  # long texts from a prefix, in one call: the same ids
            enc = encode_truncated(self.tokenizer, texts, self.max_length, keys)
        else:
            enc = padded_arrays(self.tokenizer, texts, text_pairs, self.max_length, keys)  # then torch.from_numpy
        return {k: torch.from_numpy(enc[k]) for k in keys if k in enc}

    def tokenization_key(self):
        return ("huggingface", hf_tokenizer_key(self.tokenizer), self.max_length, self.prefix_tokenization,
                self._uses_token_types)

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.module(**batch).logits

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])

    def label_id(self, label: int | str) -> int:
        if isinstance(label, str):
            label2id = {str(k): int(v) for k, v in (self.module.config.label2id or {}).items()}
            if label not in label2id:
                raise LabelError(
                    f"label {label!r} is not one of the model's classes {sorted(label2id)}: "
                    "pass a class index or one of these names"
                )
            return label2id[label]
        return int(label)

    def fingerprint_parts(self) -> dict[str, str]:
        vocab = self.tokenizer.get_vocab()
        digest = hashlib.sha256("\n".join(sorted(f"{k}\t{v}" for k, v in vocab.items())).encode()).hexdigest()
        return {
            "model_class": type(self.module).__name__,
            "tokenizer": getattr(self.tokenizer, "name_or_path", ""),
            "tokenizer_vocab_sha256": digest[:16],
        }


def as_text_classifier(model, tokenizer=None, max_length: int = 128) -> TextClassifier:
    """Wrap a model in the contract: pass-through for `TextClassifier`, HF models with their tokenizer."""
    if isinstance(model, TextClassifier):
        return model
    if hasattr(model, "get_input_embeddings") and hasattr(model, "config"):
        if tokenizer is None:
            raise ValueError("a HuggingFace model needs its tokenizer: TracInWE(models=..., tokenizer=tok)")
        return HuggingFaceClassifier(model, tokenizer, max_length=max_length)
    raise TypeError(
        f"{type(model).__name__} is neither a HuggingFace classifier nor a TextClassifier: "
        "wrap it in tracinwe.TorchTextClassifier(module, embedding=..., num_classes=..., hf_tokenizer=...)"
    )
