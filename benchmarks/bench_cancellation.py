"""Cancellation ratio per layer on real data: MiniLM-L6 fine-tuned on Rotten Tomatoes and the paper's small models.

``C(theta) = sum_i ||g_i|| / ||sum_i g_i||`` for every parameter group, on ``--n``
held-out Rotten Tomatoes snippets (and on as many training snippets), for:

- ``minilm``: all-MiniLM-L6-v2 fine-tuned (AdamW, 1 epoch on ``--n-finetune`` snippets;
  the run is cached under benchmarks/results/tmp), and the same encoder with its fresh,
  untrained head for reference;
- ``bert-small``: the paper's BERT-small shape trained from scratch with SGD + momentum;
- ``cnn``: the TokenCNN over BERT token ids (the authors' own evaluation model).

    python benchmarks/bench_cancellation.py                      # all three
    python benchmarks/bench_cancellation.py --models cnn --n 50  # a quick look

Writes benchmarks/results/cancellation_<model>_<split>.json and .png, with the configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="minilm,bert-small,cnn")
    p.add_argument("--n", type=int, default=200, help="examples per measurement")
    p.add_argument("--n-finetune", type=int, default=1000, help="MiniLM fine-tuning snippets")
    p.add_argument("--n-train", type=int, default=3000, help="training snippets of the small models")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--small-lr", type=float, default=0.05, help="SGD learning rate of the small models")
    p.add_argument("--small-epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    return p.parse_args(argv)


def _versions() -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "machine": platform.machine(), "threads": torch.get_num_threads()}


def _accuracy(clf, texts, labels) -> float:
    import torch

    from tracinwe.capture.gradients import prepared_for_capture

    correct = 0
    with prepared_for_capture(clf.module, None), torch.no_grad():
        for b in range(0, len(texts), 64):
            batch = clf.tokenize(texts[b : b + 64])
            correct += int((clf.logits(batch).argmax(1) == torch.tensor(labels[b : b + 64])).sum())
    return correct / len(texts)


def minilm_models(args, train, tokenizer):
    """(name, classifier, info) for the fine-tuned MiniLM and the same encoder with a fresh head."""
    import torch
    from transformers import AutoModelForSequenceClassification, logging

    from tracinwe.models.checkpoints import load_checkpoint_classifier
    from tracinwe.models.huggingface import HuggingFaceClassifier
    from tracinwe.models.pretrained import minilm_l6_path
    from tracinwe.training import TrainConfig, train_classifier

    logging.set_verbosity_error()
    config = TrainConfig(epochs=1, learning_rate=5e-5, batch_size=16, optimizer="adamw", num_checkpoints=1,
                         max_length=args.max_length, seed=args.seed)
    folder = RESULTS / "tmp" / f"cancellation-minilm-rt-{args.n_finetune}-{args.seed}"
    finetune = train.sample(args.n_finetune, seed=args.seed)
    checkpoints = sorted(folder.glob("checkpoint-*"))
    started = time.time()
    if not checkpoints:
        torch.manual_seed(args.seed)
        model = AutoModelForSequenceClassification.from_pretrained(minilm_l6_path(), num_labels=2)
        checkpoints = train_classifier(model, tokenizer, finetune.texts, finetune.labels, folder, config).checkpoints
    info = {"recipe": {"fine_tune": asdict(config),
                       "n_finetune": len(finetune), "cached_run": str(folder.relative_to(RESULTS.parent))},
            "finetune_seconds": round(time.time() - started, 1)}
    tuned = load_checkpoint_classifier(checkpoints[-1], tokenizer=tokenizer, max_length=args.max_length)
    torch.manual_seed(args.seed)
    fresh = AutoModelForSequenceClassification.from_pretrained(minilm_l6_path(), num_labels=2).eval()
    return [("minilm-l6-finetuned", tuned, info),
            ("minilm-l6-fresh-head", HuggingFaceClassifier(fresh, tokenizer, args.max_length),
             {"recipe": "pretrained encoder, untrained head"})]


def small_model(args, architecture: str, train, tokenizer):
    """A BERT-small or TokenCNN trained from scratch on the training snippets (SGD + momentum)."""
    import torch

    from tracinwe.training.small import SmallModelConfig, TokenizedTexts, as_classifier, train_small

    config = SmallModelConfig(num_classes=2, architecture=architecture, epochs=args.small_epochs, learning_rate=args.small_lr,
                              max_length=args.max_length, device="cpu")
    data = train.sample(args.n_train, seed=args.seed)
    started = time.time()
    run = train_small(config, TokenizedTexts.from_texts(tokenizer, data.texts, config.max_length),
                      torch.as_tensor(data.labels), seed=args.seed, keep_checkpoints=False)
    info = {"recipe": config.to_json(), "n_train": len(data), "train_seconds": round(time.time() - started, 1),
            "final_loss_mean_last_20": float(np.mean(run.losses[-20:]))}
    return [(architecture, as_classifier(run.model, tokenizer, config.max_length), info)]


def main(argv=None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from tracinwe.data import load_dataset_source
    from tracinwe.evaluate.cancellation import layer_cancellation
    from tracinwe.evaluate.experiment import load_tokenizer

    console = Console(width=140)
    tokenizer = load_tokenizer()
    data = load_dataset_source("bundled:rotten-tomatoes").dedupe()
    train, heldout = data.split(0.2, seed=args.seed)
    measured = {"heldout": heldout.sample(args.n, seed=args.seed), "train": train.sample(args.n, seed=args.seed + 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = {}
    for kind in args.models.split(","):
        models = minilm_models(args, train, tokenizer) if kind == "minilm" else small_model(args, kind, train, tokenizer)
        for name, clf, info in models:
            info["heldout_accuracy"] = _accuracy(clf, heldout.texts[:1000], heldout.labels[:1000])
            for split, sample in measured.items():
                started = time.time()
                report = layer_cancellation(clf, sample.texts, sample.labels, max_length=args.max_length, progress=True)
                report.model.update({"name": name, **{k: v for k, v in info.items() if k != "recipe"}})
                report.settings.update({"data": "bundled:rotten-tomatoes", "split": split, "n": len(sample), "seed": args.seed,
                                        "recipe": info.get("recipe"), "seconds": round(time.time() - started, 1),
                                        "versions": _versions(),
                                        "command": "python benchmarks/bench_cancellation.py "
                                                   + " ".join(sys.argv[1:] if argv is None else argv)})
                report.save(RESULTS, f"cancellation_{name}_{split}")
                console.print(report.table(f"{name} on {len(sample)} {split} Rotten Tomatoes snippets "
                                           f"(held-out acc. {info['heldout_accuracy']:.3f}; "
                                           f"sqrt(n) = {report.random_direction_ratio:.1f})"))
                summary[f"{name}/{split}"] = {layer.name: layer.ratio for layer in report.layers}
    console.print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
