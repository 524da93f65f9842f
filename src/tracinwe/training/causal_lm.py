"""Train a small GPT-2-shaped decoder from scratch on local text, saving TracIn checkpoints.

No pretrained decoder ships offline, so tests, demos and benchmarks train their own: a byte-level
BPE tokenizer learned on the training texts (``tokenizers``), a seeded GPT-2 of the requested shape,
AdamW (or SGD) on the summed-over-targets loss of `CausalLanguageModel`, averaged per target token.
Each ``folder/checkpoint-STEP`` holds weights, tokenizer and ``tracinwe_checkpoint.json`` (the
learning rate in force), the same layout as `tracinwe.training.loop`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tracinwe.io import write_json_atomic
from tracinwe.models.causal_lm import CausalLanguageModel, LMExample, as_document, load_causal_lm
from tracinwe.models.checkpoints import save_checkpoint

__all__ = [
    "DecoderConfig", "DecoderRun", "gpt2_decoder", "learning_rate_at", "load_causal_lm", "train_bpe_tokenizer", "train_decoder",
]

#: Beginning/end of text, also the padding token (as GPT-2).
END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the GPT-2 decoder and its training recipe; saved as ``train_config.json``."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 2
    n_positions: int = 128
    tie_word_embeddings: bool = True
    vocab_size: int = 2000  # of the BPE tokenizer learned on the texts
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 3e-3
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    num_checkpoints: int = 3
    max_length: int = 64
    seed: int = 0
    #: "constant" (default) or "linear" / "cosine": decay from ``learning_rate`` to ``min_lr_ratio`` of it over the
    #: run (after ``warmup_steps`` of linear warm-up); each checkpoint records the learning rate in force when saved
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    #: also save AdamW's second-moment estimate (``exp_avg_sq`` per parameter name) in every checkpoint folder as
    #: ``optimizer_second_moment.pt`` (TrackStar-like baselines normalise gradients by it)
    save_second_moment: bool = False


#: The file a checkpoint's AdamW second moment is saved in (``DecoderConfig.save_second_moment``).
SECOND_MOMENT_FILE = "optimizer_second_moment.pt"


def learning_rate_at(config: DecoderConfig, step: int, total: int) -> float:
    """The learning rate of ``config``'s schedule at optimizer step ``step`` (1-based) of ``total``."""
    base = config.learning_rate
    if config.warmup_steps and step <= config.warmup_steps:
        return base * step / config.warmup_steps
    if config.lr_schedule == "constant":
        return base
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, max(0.0, (step - config.warmup_steps) / span))
    if config.lr_schedule == "linear":
        factor = 1.0 - progress
    elif config.lr_schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"lr_schedule {config.lr_schedule!r} is not 'constant', 'linear' or 'cosine'")
    return base * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * factor)


@dataclass
class DecoderRun:
    """A trained decoder, its tokenizer and what it left on disk."""

    model: torch.nn.Module
    tokenizer: object
    folder: Path | None
    checkpoints: list[Path] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2):
    """A GPT-2-style byte-level BPE tokenizer (``PreTrainedTokenizerFast``) learned on ``texts``; pads with end-of-text."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[END_OF_TEXT],
                            show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT,
                                   unk_token=END_OF_TEXT, pad_token=END_OF_TEXT)


def gpt2_decoder(config: DecoderConfig, tokenizer) -> torch.nn.Module:
    """A freshly initialised, seeded ``GPT2LMHeadModel`` of ``config``'s shape over ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    gpt = GPT2Config(
        vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd, n_layer=config.n_layer,
        n_head=config.n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=config.tie_word_embeddings,
    )
    return GPT2LMHeadModel(gpt)


def train_decoder(
    examples: Sequence[LMExample],
    folder: str | Path | None,
    config: DecoderConfig | None = None,
    tokenizer=None,
    progress: bool = False,
    model: torch.nn.Module | None = None,
    rows: Sequence[int] | None = None,
) -> DecoderRun:
    """Train a GPT-2 decoder from scratch on ``examples`` and save ``num_checkpoints`` evenly spaced checkpoints.

    ``tokenizer=None`` learns a byte-level BPE on the examples' texts. Seeded: the same examples and
    config give the same weights. ``folder=None`` trains without saving. ``model`` (a HF causal LM
    with its ``tokenizer``) is fine-tuned instead of a new GPT-2; the config's shape is then unused.
    ``rows`` trains on those rows of ``examples`` only, in the seeded order of *all* rows restricted to
    them (as `tracinwe.training.loop.train_classifier`): a retrain without some rows sees the others in
    the same order as the full run, as the retraining evaluations need (LDS, `tracinwe.evaluate.lm_lds`).
    """
    config = DecoderConfig() if config is None else config
    if not examples:
        raise ValueError("no training examples")
    if model is not None and tokenizer is None:
        raise ValueError("a pretrained model needs its tokenizer: train_decoder(..., tokenizer=, model=)")
    kept = np.ones(len(examples), dtype=bool)
    if rows is not None:
        kept[:] = False
        kept[np.asarray(list(rows), dtype=np.int64)] = True
        if not kept.any():
            raise ValueError("no training rows to train on")
    if tokenizer is None:
        texts = (as_document(examples[i]).text for i in np.flatnonzero(kept))
        tokenizer = train_bpe_tokenizer(texts, vocab_size=config.vocab_size)
    if model is None:
        model = gpt2_decoder(config, tokenizer)
        positions = config.n_positions
    else:
        torch.manual_seed(config.seed)
        positions = int(getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 0)
                        or config.max_length)
    lm = CausalLanguageModel(model, tokenizer, max_length=min(config.max_length, positions))
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "train_config.json", {**asdict(config), "task": "causal-lm"})
        tokenizer.save_pretrained(folder)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = math.ceil(int(kept.sum()) / config.batch_size)
    total = max(1, int(round(config.epochs * steps_per_epoch)))
    save_at = {int(round(total * (i + 1) / config.num_checkpoints)) for i in range(config.num_checkpoints)}
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    else:
        raise ValueError(f"optimizer {config.optimizer!r} is not 'sgd' or 'adamw'")
    learning_rate_at(config, 1, total)  # an unknown schedule fails before training
    run = DecoderRun(model, tokenizer, folder)
    model.train()
    order: list[int] = []
    for step in range(1, total + 1):
        if not order:
            permutation = rng.permutation(len(examples))
            order = permutation[kept[permutation]].tolist()
        idx, order = order[: config.batch_size], order[config.batch_size :]
        batch = lm.tokenize([examples[i] for i in idx])
        token_losses = lm.token_losses(batch)
        loss = token_losses.sum() / batch["loss_mask"].sum().clamp(min=1)
        lr = learning_rate_at(config, step, total)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.losses.append(float(loss.detach()))
        if progress and step % 50 == 0:
            print(f"step {step}/{total} loss {np.mean(run.losses[-50:]):.3f}", flush=True)
        if folder is not None and step in save_at:
            epoch = step / steps_per_epoch
            run.checkpoints.append(save_checkpoint(model, tokenizer, folder, step, lr, epoch))
            if config.save_second_moment and config.optimizer == "adamw":
                moments = {name: opt.state[p]["exp_avg_sq"].detach().clone() for name, p in model.named_parameters()
                           if p in opt.state and "exp_avg_sq" in opt.state[p]}
                torch.save(moments, run.checkpoints[-1] / SECOND_MOMENT_FILE)
            run.learning_rates.append(lr)
    model.eval()
    return run
