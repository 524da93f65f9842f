"""Decoder-only language models (GPT-2 and friends) in the model contract.

An example is a document; the text is its own target, so labels are not used:

- a string: the loss is on every token after the first;
- ``{"prompt": ..., "completion": ...}``: the loss is on the completion's tokens only (prompt tokens
  still receive gradient, through attention);
- a list of chat messages (``{"role": ..., "content": ...}``): rendered by the tokenizer's chat
  template; when the last message is the assistant's, it is the completion, else the whole
  conversation is a document.

An example's loss is the SUM of the next-token negative log-likelihoods of its target tokens, so the
gradient of the summed batch loss at the embedding-lookup output is per-example exact in eval mode.
Gradients are taken at the output of the *input* word-embedding lookup (``wte``): tied input/output
embeddings do not make them dense, and learned position embeddings are not part of the score.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tracinwe.errors import CheckpointError, InputTextError, TokenizerMismatchError, TracInWEError
from tracinwe.models.contract import Batch, TextClassifier, hf_tokenizer_key

#: A language-model example: a document, a prompt/completion pair or a chat.
LMExample = str | Mapping[str, str] | Sequence[Mapping[str, str]]

#: The batch key of the (B, T) mask of target tokens (token t is predicted from the logits at t - 1).
LOSS_MASK = "loss_mask"


@dataclass(frozen=True)
class Document:
    """An example as text: ``completion_start`` is the character where the loss starts (None: after the first token)."""

    text: str
    completion_start: int | None = None
    add_special_tokens: bool = True


def as_document(example: LMExample, tokenizer=None) -> Document:
    """Normalise a string, a prompt/completion dict or a chat-message list into a `Document`."""
    if isinstance(example, str):
        if not example.strip():
            raise InputTextError("an LM example is an empty string: pass text")
        return Document(example)
    if isinstance(example, Mapping):
        if {"role", "content"} <= set(example):
            raise InputTextError("a chat message on its own is not an example: pass each conversation as a list of messages")
        if set(example) != {"prompt", "completion"}:
            raise InputTextError(
                f"an LM example dict needs exactly the keys 'prompt' and 'completion', got {sorted(example)}"
            )
        prompt, completion = example["prompt"], example["completion"]
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise InputTextError("an LM example's prompt and completion must be strings")
        if not completion.strip():
            raise InputTextError(f"the completion of prompt {prompt[:40]!r} is empty: pass the text to explain")
        return Document(prompt + completion, len(prompt))
    if isinstance(example, Sequence) and example and all(isinstance(m, Mapping) for m in example):
        return _chat_document(list(example), tokenizer)
    raise InputTextError(
        "an LM example must be a string, a {'prompt', 'completion'} dict or a list of chat messages, "
        f"not {type(example).__name__}"
    )


def _chat_document(messages: list[Mapping[str, str]], tokenizer) -> Document:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise InputTextError("chat messages need a tokenizer with a chat template: set tokenizer.chat_template or pass text")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if messages[-1].get("role") != "assistant" or len(messages) < 2:
        return Document(full, None, add_special_tokens=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt) or not full[len(prompt):].strip():
        raise InputTextError("the chat template does not render the conversation as its prompt plus the assistant's reply")
    return Document(full, len(prompt), add_special_tokens=False)


class CausalLanguageModel(TextClassifier):
    """A ``transformers`` ``*ForCausalLM`` model and its fast tokenizer in the contract.

    Batches are right-padded (positions of real tokens do not depend on the batch) and carry
    ``loss_mask`` beside ``input_ids`` and ``attention_mask``. Long documents are truncated to
    ``max_length`` tokens at the end; a prompt/completion pair keeps its whole completion and
    loses prompt tokens from the left (a completion of ``max_length`` tokens or more is an error).
    Records of LM examples carry label -1 and, in place of logits, each example's summed loss (B, 1).
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128) -> None:
        self.module = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        if not getattr(tokenizer, "is_fast", False):
            raise TokenizerMismatchError("a causal LM needs a fast tokenizer (character offsets mark the completion)")
        if len(tokenizer) > self.vocab_size:
            raise TokenizerMismatchError(
                f"tokenizer has {len(tokenizer)} tokens but the model's word embedding has {self.vocab_size} rows: "
                "load the tokenizer saved with this checkpoint"
            )
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise TokenizerMismatchError("tokenizer has no padding token: set tokenizer.pad_token (e.g. to its eos token)")
        if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
            raise TracInWEError("an encoder-decoder model is not a decoder-only language model")

    @property
    def embedding(self) -> nn.Module:
        return self.module.get_input_embeddings()

    @property
    def num_classes(self) -> int:
        """The vocabulary: a language model's "classes" are next tokens."""
        return int(self.module.get_output_embeddings().weight.shape[0])

    @property
    def special_token_ids(self) -> frozenset[int]:
        return frozenset(int(i) for i in self.tokenizer.all_special_ids) - {self.tokenizer.pad_token_id}

    def token_ids(self, example: LMExample, truncate: bool = True) -> tuple[list[int], list[bool]]:
        """Token ids of one example and which of them are targets of the loss.

        ``truncate=False``: a text longer than ``max_length`` is an `InputTextError` instead of being cut.
        """
        doc = as_document(example, self.tokenizer)
        enc = self.tokenizer(doc.text, add_special_tokens=doc.add_special_tokens, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
        if doc.completion_start is None:
            if not truncate and len(ids) > self.max_length:
                raise InputTextError(
                    f"a text of {len(ids)} tokens does not fit max_length={self.max_length}: "
                    "split the document or raise max_length"
                )
            ids = ids[: self.max_length]
            return ids, [i > 0 for i in range(len(ids))]
        first = next((i for i, (a, b) in enumerate(offsets) if b > doc.completion_start and b > a), None)
        if first is None:
            raise InputTextError(f"the completion of {doc.text[:40]!r} has no tokens: pass a non-empty completion")
        first = max(first, 1)  # the first token of a document is never predicted
        n_completion = len(ids) - first
        if n_completion >= self.max_length:
            raise InputTextError(
                f"a completion of {n_completion} tokens does not fit max_length={self.max_length} with its prompt: "
                "shorten it or raise max_length"
            )
        cut = max(0, len(ids) - self.max_length)
        ids = ids[cut:]
        return ids, [i >= first - cut for i in range(len(ids))]

    def tokenize(self, texts: Sequence[LMExample], text_pairs: Sequence[str] | None = None) -> Batch:
        if text_pairs is not None:
            raise InputTextError("a language model takes no text pairs: pass {'prompt', 'completion'} dicts")
        rows = [self.token_ids(example) for example in texts]
        width = max(len(ids) for ids, _ in rows)
        batch = {
            "input_ids": torch.full((len(rows), width), int(self.tokenizer.pad_token_id), dtype=torch.long),
            "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
            LOSS_MASK: torch.zeros(len(rows), width, dtype=torch.bool),
        }
        for i, (ids, targets) in enumerate(rows):
            batch["input_ids"][i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            batch["attention_mask"][i, : len(ids)] = 1
            batch[LOSS_MASK][i, : len(ids)] = torch.tensor(targets, dtype=torch.bool)
        return batch

    def tokenization_key(self):
        return ("causal-lm", hf_tokenizer_key(self.tokenizer), self.max_length)

    def logits(self, batch: Batch) -> torch.Tensor:
        """Next-token logits (B, T, V)."""
        return self.module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def token_losses(self, batch: Batch) -> torch.Tensor:
        """(B, T) negative log-likelihood of each target token (0 elsewhere); position t is token t's loss."""
        logits = self.logits(batch)
        targets = batch["input_ids"][:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), targets, reduction="none"
        )
        mask = batch[LOSS_MASK][:, 1:].to(nll.device)
        return torch.nn.functional.pad(nll * mask, (1, 0))

    def batch_losses(self, batch: Batch, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed target-token loss of each example; labels are ignored (the text is its own target)."""
        losses = self.token_losses(batch).sum(dim=1)
        no_label = torch.full((losses.shape[0],), -1, dtype=torch.long, device=losses.device)
        return losses, losses.detach()[:, None], no_label

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens([int(t) for t in token_ids])

    def label_id(self, label: int | str) -> int:
        raise InputTextError("a language model takes no labels: the text is its own target (pass labels=None)")

    def fingerprint_parts(self) -> dict[str, str]:
        vocab = self.tokenizer.get_vocab()
        digest = hashlib.sha256("\n".join(sorted(f"{k}\t{v}" for k, v in vocab.items())).encode()).hexdigest()
        return {
            "model_class": type(self.module).__name__,
            "task": "causal-lm",
            "tokenizer": getattr(self.tokenizer, "name_or_path", ""),
            "tokenizer_vocab_sha256": digest[:16],
        }


def is_causal_lm(model) -> bool:
    """Whether an in-memory model is a decoder-only LM: a `CausalLanguageModel` or a HF ``*ForCausalLM``-type class."""
    if isinstance(model, CausalLanguageModel):
        return True
    if isinstance(model, TextClassifier):
        return False
    return _is_causal_lm_class(type(model).__name__)


def folder_architecture(folder: str | Path) -> str | None:
    """The model class a checkpoint folder's ``config.json`` names (None when it names none or cannot be read)."""
    try:
        architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    return str(architectures[0]) if architectures else None


def _is_causal_lm_class(name: str) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return name.endswith(("ForCausalLM", "LMHeadModel")) or name in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def folder_is_causal_lm(folder: str | Path) -> bool:
    """Whether a checkpoint folder holds a causal LM (by the architecture in its ``config.json``)."""
    name = folder_architecture(folder)
    return name is not None and _is_causal_lm_class(name)


def load_causal_lm(folder: str | Path, max_length: int = 128, device: str = "cpu", tokenizer=None) -> CausalLanguageModel:
    """A saved decoder checkpoint (``AutoModelForCausalLM`` + its tokenizer) in the model contract, in eval mode.

    The tokenizer is the one saved in the folder or its parent run folder unless ``tokenizer`` is given.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tracinwe.models.checkpoints import check_checkpoint_folder, find_tokenizer_folder, hf_progress_bars_hidden

    path = check_checkpoint_folder(folder)
    name = folder_architecture(path)
    if name is not None and not _is_causal_lm_class(name):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {name}, not a causal language model: pass a decoder checkpoint"
        )
    try:
        with hf_progress_bars_hidden():
            model = AutoModelForCausalLM.from_pretrained(path)
    except Exception as exc:  # corrupt weights, wrong config: name the folder, keep the cause
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {str(path)!r} could not be loaded ({first_line}): re-save it") from exc
    if tokenizer is None:
        tok_folder = find_tokenizer_folder(path)
        if tok_folder is None:
            raise CheckpointError(f"no tokenizer files in {str(path)!r} or its parent: pass tokenizer=")
        tokenizer = AutoTokenizer.from_pretrained(tok_folder)
    return CausalLanguageModel(model.to(device).eval(), tokenizer, max_length=max_length)


def as_causal_lm(model, tokenizer=None, max_length: int = 128) -> CausalLanguageModel:
    """Wrap a HF ``*ForCausalLM`` model (pass-through for `CausalLanguageModel`); a classifier is a one-line error."""
    if isinstance(model, CausalLanguageModel):
        return model
    if isinstance(model, TextClassifier) or not hasattr(model, "get_output_embeddings") or model.get_output_embeddings() is None:
        raise TracInWEError(
            f"{type(model).__name__} is not a causal language model (no language-model head): "
            "pass an AutoModelForCausalLM checkpoint"
        )
    if tokenizer is None:
        raise ValueError("a HuggingFace language model needs its tokenizer: as_causal_lm(model, tokenizer)")
    return CausalLanguageModel(model, tokenizer, max_length=max_length)
