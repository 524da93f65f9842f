"""The paper's fix-rate experiment: delete top opponents / mask their worst shared word, retrain, count fixes.

On a real data set, for every seed, a small model (TokenCNN over BERT ids, the
stable SGD recipe) is trained; its held-out mistakes with gold-class
probability in [0.3, 0.7] are "fixed" by each strategy with that seed's own
scores (same-seed retrain after deleting the top-m opponents of TracIn-WE,
TracIn-WE-Top10, IF-last or TracIn-last, or after masking the most negative
shared word of as many TracIn-WE top opponents), against two controls: the
same seed without m random rows, and plain retraining with another seed.
Reports fix rates with McNemar's p against the random control, and the change
in held-out accuracy, next to the paper's figures (Toxicity, m = 50 of 50k).

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_fix.py --dataset reuters-r8 --workers 2

Prints the table and writes ``benchmarks/results/fix_<dataset>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: Yeh et al. 2022, Toxicity: share of mistakes fixed.
PAPER = {"delete top-50 opponents: TracIn-WE-Top10": 0.73, "delete top-50 opponents: IF-last": 0.33,
         "mask worst word in top-200 opponents: TracIn-WE-Top10": 0.70, "retrain (other seed)": 0.30}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="reuters-r8")
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-heldout", type=int, default=1500, help="the pool the mistakes come from")
    p.add_argument("--seeds", default="0,1,2", help="each seed: its own model, mistakes and scores")
    p.add_argument("--delete-count", type=int, default=20)
    p.add_argument("--mask-count", type=int, default=20, help="equal to --delete-count: equal edit budgets")
    p.add_argument("--max-cases", type=int, default=20, help="per seed")
    p.add_argument("--low", type=float, default=0.3)
    p.add_argument("--high", type=float, default=0.7)
    p.add_argument("--epochs", type=int, default=None, help="default: the stable recipe")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--cache-dir", default=None, help="default: benchmarks/results/tmp/fix-<dataset>")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared machine)")
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    from rich.console import Console
    from rich.table import Table

    from tracinwe.evaluate.experiment import ExperimentSetup
    from tracinwe.evaluate.fix_experiment import FixSetup, run_fix_experiment
    from tracinwe.io import write_json_atomic
    from tracinwe.training.small import stable_config

    start = time.time()
    model = stable_config("cnn", epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size,
                          max_length=args.max_length, device=args.device)
    experiment = ExperimentSetup(source=f"bundled:{args.dataset}", n_train=args.n_train, n_heldout=args.n_heldout,
                                 n_test_points=1, ks=(1,), seeds=tuple(int(s) for s in args.seeds.split(",")), methods=(),
                                 model=model)
    setup = FixSetup(experiment, args.delete_count, args.mask_count, max_cases=args.max_cases, low=args.low, high=args.high,
                     workers=args.workers)
    cache = Path(args.cache_dir or RESULTS / "tmp" / f"fix-{args.dataset}{'-' + args.tag if args.tag else ''}")
    result = run_fix_experiment(setup, cache_dir=cache)
    report = result.to_json()
    report["argv"] = sys.argv[1:] if argv is None else list(argv)
    report["wall_time_s"] = time.time() - start
    report["paper_toxicity_fix_rates"] = PAPER
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"fix_{args.dataset}{'-' + args.tag if args.tag else ''}.json"
    write_json_atomic(out, report)
    console = Console()
    if result.summary:
        console.print(result.rich_table(f"{args.dataset} (seeds {args.seeds}, p(gold) in [{args.low}, {args.high}])"))
        print(result.markdown())
    else:
        console.print("no mistakes in the probability window: nothing to fix")
    paper = Table(title="paper, Toxicity (BERT-small, 50k training examples)")
    paper.add_column("strategy")
    paper.add_column("fixed", justify="right")
    for name, rate in PAPER.items():
        paper.add_row(name, f"{rate:.0%}")
    console.print(paper)
    console.print(f"wall time {report['wall_time_s']:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
