"""A `tracinwe train --task causal-lm` run folder: a decoder trained or fine-tuned on documents.

The same layout as a classifier run (`tracinwe.run`): ``checkpoint-STEP`` folders (weights,
tokenizer, learning rate) and ``tracinwe_run.json`` with ``"task": "causal-lm"``, the base model,
the data source and its columns, the training rows' ids and the settings, so ``tracinwe explain
--generate`` finds the training documents again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from tracinwe.errors import TracInWEError
from tracinwe.io import write_json_atomic
from tracinwe.run import RUN_INFO_FILE, check_run_folder, clear_old_run, read_run_info, recorded_source

__all__ = ["SCRATCH_MODELS", "CAUSAL_LM", "is_lm_run", "train_lm_run", "lm_run_documents", "explain_max_length"]

CAUSAL_LM = "causal-lm"
#: ``--model`` names that mean "from scratch": a byte-level BPE learned on the data and a small GPT-2 of this shape.
SCRATCH_MODELS: dict[str, dict[str, int]] = {"gpt2-tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 2000}}
#: Held-out documents whose mean per-token loss is reported.
HELDOUT_SCORED = 500


def is_lm_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` was written by ``tracinwe train --task causal-lm``."""
    return read_run_info(run_dir).get("task") == CAUSAL_LM


def pretrained_decoder(model: str, seed: int):
    """``(model, tokenizer)`` of a local HF folder or hub id holding a decoder-only LM; anything else is one line."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tracinwe.models.causal_lm import _is_causal_lm_class
    from tracinwe.models.checkpoints import hf_progress_bars_hidden
    from tracinwe.models.pretrained import resolve_model_name

    name = resolve_model_name(model)
    try:
        config = AutoConfig.from_pretrained(name)
        architectures = list(getattr(config, "architectures", None) or [])
        if getattr(config, "is_encoder_decoder", False) or (architectures and not _is_causal_lm_class(architectures[0])):
            raise TracInWEError(f"model {model!r} is a {architectures[0] if architectures else config.model_type}, "
                                f"not a decoder-only language model: pass {', '.join(SCRATCH_MODELS)} or a *ForCausalLM folder")
        tokenizer = AutoTokenizer.from_pretrained(name)
        torch.manual_seed(seed)
        with hf_progress_bars_hidden():
            net = AutoModelForCausalLM.from_pretrained(name)
    except OSError as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise TracInWEError(f"model {model!r} could not be loaded ({first}): pass {', '.join(SCRATCH_MODELS)} "
                            "(from scratch), a local HF folder, or a hub id (needs internet)") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return net, tokenizer


def train_lm_run(out: str | Path, model: str, train_set, config, *, heldout=None, data: str | None = None,
                 overwrite: bool = False, status: Callable[[str], AbstractContextManager] | None = None) -> dict:
    """Train (``model`` in `SCRATCH_MODELS`) or fine-tune a decoder on ``train_set`` into ``out``; return the summary.

    ``train_set`` and ``heldout`` are `tracinwe.data.documents.LMDocuments`; ``config`` a
    `tracinwe.training.causal_lm.DecoderConfig` (its shape is replaced by the scratch model's).
    With ``heldout``, the final checkpoint's mean loss per target token on up to 500 of its
    documents is ``heldout_loss``.
    """
    import numpy as np

    from tracinwe.training.causal_lm import train_decoder

    out = Path(out)
    status = status or (lambda message: nullcontext())
    check_run_folder(out, overwrite)
    if not len(train_set):
        raise TracInWEError("no training documents left: pass more data (or a larger --n-train)")
    base, tokenizer = None, None
    if model in SCRATCH_MODELS:
        config = dataclasses.replace(config, **SCRATCH_MODELS[model], n_positions=max(128, config.max_length))
    else:
        with status(f"loading {model} ..."):
            base, tokenizer = pretrained_decoder(model, config.seed)
    clear_old_run(out)
    with status(f"training on {len(train_set)} documents ..."):
        run = train_decoder(train_set.examples, out, config, tokenizer=tokenizer, model=base)
    loss = None
    if heldout is not None and len(heldout):
        loss = _heldout_loss(run, heldout.sample(HELDOUT_SCORED, seed=config.seed).examples, config)
    summary = {
        "task": CAUSAL_LM, "run_dir": str(out), "model": model, "data": None if data is None else recorded_source(data),
        "columns": dict(train_set.columns), "n_train": len(train_set),
        "checkpoints": [str(p) for p in run.checkpoints], "learning_rates": run.learning_rates,
        "final_loss": float(np.mean(run.losses[-20:])) if run.losses else float("nan"),
        "heldout_loss": loss, "n_heldout_scored": 0 if loss is None else min(len(heldout), HELDOUT_SCORED),
        "settings": dataclasses.asdict(config), "train_ids": list(train_set.ids),
    }
    write_json_atomic(out / RUN_INFO_FILE, summary)
    return {k: v for k, v in summary.items() if k != "train_ids"}


def _heldout_loss(run, examples: list, config) -> float:
    """Mean loss per target token of the final model on ``examples``."""
    import torch

    from tracinwe.models.causal_lm import CausalLanguageModel

    positions = int(getattr(run.model.config, "n_positions", config.max_length))
    lm = CausalLanguageModel(run.model.eval(), run.tokenizer, max_length=min(config.max_length, positions))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), config.batch_size):
            batch = lm.tokenize(examples[start : start + config.batch_size])
            total += float(lm.token_losses(batch).sum())
            count += int(batch["loss_mask"][:, 1:].sum())
    return total / max(count, 1)


def lm_run_documents(run_dir: str | Path | None, data: str | None, text_column: str | None = None,
                     prompt_column: str | None = None, completion_column: str | None = None):
    """The training documents of an LM run (its recorded rows, in its order), or all of ``data``."""
    from tracinwe.data.documents import load_documents

    info = read_run_info(run_dir) if run_dir is not None else {}
    source = data or info.get("data")
    if source is None:
        raise TracInWEError("no training data recorded for these checkpoints: pass --data (the documents they were trained on)")
    if data is None:
        recorded = info.get("columns", {})
        text_column, prompt_column, completion_column = (
            recorded.get(c) for c in ("text_column", "prompt_column", "completion_column"))
    docs = load_documents(source, text_column, prompt_column, completion_column)
    if data is None and info.get("train_ids"):
        where = {rid: i for i, rid in enumerate(docs.ids)}
        docs = docs.subset([where[r] for r in info["train_ids"] if r in where])
    return docs


def explain_max_length(folder: str | Path, default: int = 128) -> int:
    """The longest input the checkpoint's model takes (its position limit, at most 1,024 tokens)."""
    import json

    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return default
    limit = config.get("n_positions") or config.get("max_position_embeddings") or default
    return int(min(limit, 1024))
