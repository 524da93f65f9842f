"""LDS (linear datamodeling score) of every influence method on real offline data, with the noise gate.

For each data set: class-balanced test points fixed from the labels; for every
seed, the full run is trained and each method scores the training set with that
run's own checkpoints; M random half-size subsets are retrained under every
seed (shared by all methods and points); per point, the Spearman correlation
between the summed scores and the retrained model's gold log-odds. Before that
the retraining noise (same seed, 5% of the data deleted at random) is measured.
Every retrain is cached under ``--cache-dir``: rerunning the command resumes.

Usage::

    python benchmarks/bench_lds.py --dataset sms-spam
    python benchmarks/bench_lds.py --dataset rotten-tomatoes --architecture minilm-l2 --n-train 600 --layers

Prints the table and writes ``benchmarks/results/lds_<dataset>[-<architecture>][-<tag>].json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tracinwe.training.small import ARCHITECTURES

RESULTS = Path(__file__).resolve().parent / "results"
ALL_METHODS = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "Representer", "IF-last", "Grad-Cos-last", "TF-IDF",
               "TracIn-middle", "random")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sms-spam")
    p.add_argument("--architecture", default="cnn", choices=list(ARCHITECTURES))
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-heldout", type=int, default=500)
    p.add_argument("--test-points", type=int, default=100)
    p.add_argument("--subsets", type=int, default=64)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--methods", default=",".join(ALL_METHODS))
    p.add_argument("--layers", action="store_true", help="add TracIn on each encoder layer (transformers: the layer table)")
    p.add_argument("--epochs", type=int, default=None, help="default: the architecture's stable recipe")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--results-dir", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console

    from tracinwe.evaluate.experiment import ExperimentSetup, run_lds_experiment, save_result
    from tracinwe.training.small import stable_config

    model = stable_config(args.architecture, epochs=args.epochs, learning_rate=args.learning_rate,
                          batch_size=args.batch_size, max_length=args.max_length, device=args.device)
    methods = [m for m in args.methods.split(",") if m]
    if args.layers and args.architecture.startswith("minilm"):
        n_layers = int(args.architecture.removeprefix("minilm-l"))
        methods += [f"TracIn@bert.encoder.layer.{i}" for i in range(n_layers)]
        methods = [m for m in methods if m != "TracIn-middle"]
    setup = ExperimentSetup(source=f"bundled:{args.dataset}", n_train=args.n_train, n_heldout=args.n_heldout,
                            n_test_points=args.test_points, seeds=tuple(int(s) for s in args.seeds.split(",")),
                            methods=tuple(methods), model=model, n_subsets=args.subsets, subset_fraction=args.fraction)
    name = args.dataset + ("" if args.architecture == "cnn" else f"-{args.architecture}") + (f"-{args.tag}" if args.tag else "")
    cache = Path(args.cache_dir or RESULTS / "tmp" / f"lds-{name}")
    result, info = run_lds_experiment(setup, cache, workers=args.workers)
    info = {**info, "argv": sys.argv[1:] if argv is None else list(argv), "wall_time_s": time.time() - start,
            "workers": args.workers}
    out = Path(args.results_dir) / f"lds_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_result(result, info, out)
    console = Console()
    console.print(result.rich_table(f"LDS, {args.dataset}, {args.architecture} (held-out accuracy "
                                    f"{info['heldout_accuracy']:.3f})"))
    console.print(info["noise_gate"])
    console.print(result.recommendation())
    print(result.markdown())
    print(f"wall time {time.time() - start:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
