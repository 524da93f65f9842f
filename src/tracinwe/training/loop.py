"""A small, seeded fine-tuning loop for HuggingFace classifiers that saves TracIn checkpoints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tracinwe.io import write_json_atomic
from tracinwe.models.checkpoints import save_checkpoint


@dataclass
class TrainConfig:
    """Fine-tuning settings, saved as ``train_config.json`` in the run folder."""

    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 16
    optimizer: str = "adamw"  # or "sgd" (with momentum, as in the paper)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"  # or "linear" decay to zero
    num_checkpoints: int = 3
    max_length: int = 64
    seed: int = 0


@dataclass
class TrainedRun:
    """What a training run left on disk."""

    folder: Path | None
    checkpoints: list[Path] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


def _learning_rate(config: TrainConfig, step: int, total: int) -> float:
    if config.schedule == "linear":
        return config.learning_rate * max(0.0, 1.0 - step / total)
    return config.learning_rate


def train_classifier(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    folder: str | Path | None,
    config: TrainConfig | None = None,
    text_pairs: Sequence[str] | None = None,
    progress: bool = True,
    rows: Sequence[int] | None = None,
) -> TrainedRun:
    """Fine-tune ``model`` and save ``config.num_checkpoints`` evenly spaced checkpoints.

    Each ``folder/checkpoint-STEP`` holds the weights, the tokenizer and the
    learning rate in force (``tracinwe_checkpoint.json``). Saves are atomic;
    ``folder=None`` trains without saving anything.

    ``rows`` trains on those rows of ``texts`` only, in the seeded order of *all*
    rows restricted to them: a retrain without some rows sees the others in the
    same order as the full run (``rows=None``), as the retraining evaluations need.
    """
    from tqdm.auto import tqdm

    config = TrainConfig() if config is None else config
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "train_config.json", asdict(config))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    kept = np.ones(len(texts), dtype=bool)
    if rows is not None:
        kept[:] = False
        kept[np.asarray(list(rows), dtype=np.int64)] = True
    n = int(kept.sum())
    if n == 0:
        raise ValueError("no training rows to train on")
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = max(1, int(round(config.epochs * steps_per_epoch)))
    save_at = {int(round(total * (i + 1) / config.num_checkpoints)) for i in range(config.num_checkpoints)}
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        raise ValueError(f"optimizer {config.optimizer!r} is not 'sgd' or 'adamw'")
    run = TrainedRun(folder)
    model.train()
    order: list[int] = []
    bar = tqdm(total=total, desc="fine-tuning", unit="step", disable=not progress)
    device = next(model.parameters()).device
    for step in range(1, total + 1):
        if not order:
            permutation = rng.permutation(len(texts))
            order = permutation[kept[permutation]].tolist()
        idx, order = order[: config.batch_size], order[config.batch_size :]
        lr = _learning_rate(config, step - 1, total)
        for group in opt.param_groups:
            group["lr"] = lr
        enc = tokenizer(
            [texts[i] for i in idx], [text_pairs[i] for i in idx] if text_pairs is not None else None,
            padding=True, truncation=True, max_length=config.max_length, return_tensors="pt",
        ).to(device)
        out = model(**enc, labels=torch.tensor([labels[i] for i in idx], device=device))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        run.losses.append(float(out.loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(run.losses[-20:]):.3f}")
        if folder is not None and step in save_at:
            path = save_checkpoint(model, tokenizer, folder, step, lr, step / steps_per_epoch)
            run.checkpoints.append(path)
            run.learning_rates.append(lr)
    bar.close()
    model.eval()
    return run
