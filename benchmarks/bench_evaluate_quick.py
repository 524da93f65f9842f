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
    p.add_argument("--out", default=str(RESULTS / "evaluate_quick.json"))
    args = p.parse_args(argv)
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(f"bundled:{args.dataset}").dedupe().sample(args.n_train * 2, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mine.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["review", "verdict"])
            writer.writerows([t, data.label_names[y]] for t, y in zip(data.texts, data.labels))
        command = ["tracinwe", "evaluate", "lds", "--data", str(path), "--text-column", "review", "--label-column",
                   "verdict", "--n-train", str(args.n_train), "--quick", "--out", str(Path(tmp) / "lds")]
        start = time.time()
        run = subprocess.run(command, capture_output=True, text=True)
        wall = time.time() - start
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            return run.returncode
        result = json.loads((Path(tmp) / "lds" / "results.json").read_text())
    print(run.stdout)
    print(f"wall time {wall:.0f} s for {args.n_train} training examples (--quick); target <= 900 s")
    payload = {"argv": sys.argv[1:] if argv is None else list(argv), "command": command[:2] + ["lds", "...", "--quick"],
               "dataset": args.dataset, "n_train": args.n_train, "wall_time_s": wall, "target_s": 900,
               "recommendation": result["recommendation"], "summary": result["summary"],
               "noise_gate": result["experiment"]["noise_gate"], "heldout_accuracy": result["experiment"]["heldout_accuracy"]}
    from tracinwe.io import write_json_atomic

    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
