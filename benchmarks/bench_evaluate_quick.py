"""How long `tracinwe evaluate lds --quick` takes on 2,000 training examples of a user's CSV, and what it says.

The "which method should I trust here?" workflow must answer in minutes on a
laptop-class CPU. This writes the bundled Rotten Tomatoes reviews as a user's
CSV (columns ``review``/``verdict``), runs the command as a user would, and
records its wall time, its table and its one-line recommendation.

Usage::

    python benchmarks/bench_evaluate_quick.py            # 2,000 training reviews, --quick
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="rotten-tomatoes")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--run-dir", action="store_true", help="evaluate a `tracinwe train` run instead of the proxy model")
    p.add_argument("--out", default=None, help="default: results/evaluate_quick[_run-dir].json")
    p.add_argument("--recipe", default="", help="extra recipe options passed to the command, e.g. "
                                                "'--learning-rate 0.002 --epochs 20'")
    args = p.parse_args(argv)
    args.out = args.out or str(RESULTS / ("evaluate_quick_run-dir.json" if args.run_dir else "evaluate_quick.json"))
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(f"bundled:{args.dataset}").dedupe().sample(args.n_train * 2, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "verdict"])
            writer.writerows([t, data.label_names[y]] for t, y in zip(data.texts, data.labels))
        train_wall = None
        if args.run_dir:
            base = save_base_model(Path(tmp) / "minilm-l2", len(data.label_names))
            train = ["tracinwe", "train", "--data", str(path), "--text-column", "review", "--label-column", "verdict",
                     "--model", str(base), "--n-train", str(args.n_train), "--epochs", "2", "--lr", "1e-4",
                     "--batch-size", "32", "--max-length", "48", "--holdout", "0.2", "--out", str(Path(tmp) / "run")]
            start = time.time()
            trained = subprocess.run(train, capture_output=True, text=True)
            train_wall = time.time() - start
            if trained.returncode != 0:
                print(trained.stdout[-3000:], trained.stderr[-3000:])
                return trained.returncode
            print(trained.stdout)
            command = ["tracinwe", "evaluate", "lds", "--run-dir", str(Path(tmp) / "run"), "--quick",
                       "--out", str(Path(tmp) / "lds")]
        else:
            command = ["tracinwe", "evaluate", "lds", "--data", str(path), "--text-column", "review", "--label-column",
                       "verdict", "--n-train", str(args.n_train), "--quick", "--out", str(Path(tmp) / "lds"),
                       *args.recipe.split()]
        start = time.time()
        run = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - start
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            return run.returncode
        result = json.loads((Path(tmp) / "lds" / "results.json").read_text())
    print(run.stdout)
    print(f"wall time {wall:.0f} s for {args.n_train} training examples (--quick); target <= 900 s")
    if train_wall is not None:
        print(f"training the run took {train_wall:.0f} s: evaluating it cost {wall / train_wall:.1f}x its training")
    shown = command[:2] + ["lds", "...", "--quick", *args.recipe.split()]
    payload = {"argv": sys.argv[1:] if argv is None else list(argv), "command": shown,
               "mode": "run-dir" if args.run_dir else "proxy", "train_wall_time_s": train_wall,
               "cost_over_training": None if train_wall is None else wall / train_wall,
               "dataset": args.dataset, "n_train": args.n_train, "wall_time_s": wall, "target_s": 900,
               "recommendation": result["recommendation"], "summary": result["summary"],
               "noise_gate": result["experiment"]["noise_gate"], "heldout_accuracy": result["experiment"]["heldout_accuracy"]}
    from tracinwe.io import write_json_atomic

    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return 0


def save_base_model(folder: Path, num_classes: int) -> Path:
    """The bundled MiniLM-L6 cut to its first 2 layers (dropout off), saved as the user's base model folder."""
    from tracinwe.evaluate.experiment import load_tokenizer
    from tracinwe.training.small import pretrained_minilm

    pretrained_minilm(num_classes, 2).save_pretrained(folder)
    load_tokenizer().save_pretrained(folder)
    return folder


if __name__ == "__main__":
    sys.exit(main())
