"""The paper's case-deletion table (AUC-DEL+/-) on real offline data, next to the paper's numbers.

For each data set: class-balanced test points fixed from the labels; a small
model retrained with a stable recipe (TokenCNN over BERT ids from scratch, SGD
lr 0.02 + momentum, by default; or the pretrained MiniLM-L2); for every seed the
full run is trained and every method scores with *that run's* checkpoints; for
each test point, method, sign, k and seed a retrain without the top-k
proponents (DEL+) or opponents (DEL-), paired with the full run of the same
seed. The retraining noise (random deletions of the largest k, same seed) is
measured first, and a random-deletion control is run for every k. Every retrain
is cached under ``--cache-dir`` by what it deletes: rerunning resumes.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_deletion.py --dataset sms-spam
    python benchmarks/bench_deletion.py --dataset bbc-news --n-train 1200 --max-length 96
    python benchmarks/bench_deletion.py --dataset sms-spam --save-data d.json --save-tokenizer tok/   # texts only
    python benchmarks/bench_deletion.py --from-data d.json --tokenizer tok/ --device cuda --workers 14   # e.g. on a GPU box

Prints the table and writes ``benchmarks/results/deletion_<dataset>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tracinwe.training.small import ARCHITECTURES

RESULTS = Path(__file__).resolve().parent / "results"

#: The paper's AUC-DEL+ / AUC-DEL- (Yeh et al. 2022, Table 1), for the side-by-side table.
PAPER = {
    "Toxicity": {"IF-last": (-0.022, -0.001), "Representer": (-0.021, 0.006), "TracIn-last": (-0.025, 0.007),
                 "TracIn-WE": (-0.105, 0.122), "TracIn-WE-Top10": (-0.104, 0.125), "TF-IDF": (-0.067, 0.044)},
    "AG News": {"IF-last": (-0.025, 0.023), "Representer": (-0.021, 0.021), "TracIn-last": (-0.032, 0.017),
                "TracIn-WE": (-0.148, 0.100), "TracIn-WE-Top10": (-0.152, 0.100), "TF-IDF": (-0.083, 0.054)},
}
#: Which of the paper's tasks each data set stands in for.
PAPER_TASK = {"sms-spam": "Toxicity", "bbc-news": "AG News", "rotten-tomatoes": "Toxicity", "reuters-r8": "AG News"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="sms-spam", help="bundled data set name (sms-spam, bbc-news, rotten-tomatoes, ...)")
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--test-points", type=int, default=60, help="class-balanced test points")
    p.add_argument("--ks", default="30,100", help="comma-separated numbers of deleted examples")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--methods", default="TracIn-WE,TracIn-last,TF-IDF",
                   help="comma-separated (the random control always runs); secondary: TracIn-WE-Top10,Representer,IF-last,...")
    p.add_argument("--architecture", default="cnn", choices=list(ARCHITECTURES))
    p.add_argument("--epochs", type=int, default=None, help="default: the architecture's stable recipe")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process (1 is fastest on a shared machine)")
    p.add_argument("--tag", default="", help="suffix of the result file name")
    p.add_argument("--cache-dir", default=None, help="default: benchmarks/results/tmp/deletion-<dataset>[-<tag>]")
    p.add_argument("--time-limit", type=float, default=None, help="stop starting retrains after this many seconds")
    p.add_argument("--budget", type=float, default=None, help="whole-run budget in seconds (sets --time-limit after scoring)")
    p.add_argument("--results-dir", default=str(RESULTS))
    p.add_argument("--save-data", default=None, help="write the setup and the sampled texts to this JSON file, stop")
    p.add_argument("--save-tokenizer", default=None, help="with --save-data: save the tokenizer to this folder")
    p.add_argument("--from-data", default=None, help="run from a --save-data file (no data packages needed)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the bundled MiniLM's)")
    return p.parse_args(argv)


def setup_from(args):
    from tracinwe.evaluate.experiment import ExperimentSetup
    from tracinwe.training.small import stable_config

    model = stable_config(args.architecture, epochs=args.epochs, learning_rate=args.learning_rate,
                          batch_size=args.batch_size, max_length=args.max_length, dim=args.dim, channels=args.dim,
                          device=args.device)
    return ExperimentSetup(source=f"bundled:{args.dataset}", n_train=args.n_train, n_test_points=args.test_points,
                           ks=tuple(int(k) for k in args.ks.split(",")), seeds=tuple(int(s) for s in args.seeds.split(",")),
                           methods=tuple(m for m in args.methods.split(",") if m), model=model)


def print_table(result, info: dict, dataset: str, elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    from tracinwe.evaluate.noise import NoiseReport

    console.print(result.rich_table(f"{dataset} (held-out accuracy {info['heldout_accuracy']:.3f})"))
    console.print(NoiseReport.from_json(result.settings["noise_gate"]).message())
    console.print(f"saturated points (p_gold > 0.999) per seed: {info['saturated_points_by_seed']}")
    task = PAPER_TASK.get(dataset)
    if task:
        table = Table(title=f"paper, {task} (BERT-small, 50k training examples)")
        for col in ("method", "AUC-DEL+", "AUC-DEL-"):
            table.add_column(col)
        for name, (plus, minus) in PAPER[task].items():
            table.add_row(name, f"{plus:+.3f}", f"{minus:+.3f}")
        console.print(table)
    print(result.markdown())
    console.print(f"wall time {elapsed:.0f} s")


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    import torch

    torch.set_num_threads(args.threads)
    from tracinwe.evaluate.experiment import DataSplit, load_tokenizer, run_deletion_experiment, save_result, split_data
    from tracinwe.io import write_json_atomic

    if args.from_data:
        saved = json.loads(Path(args.from_data).read_text())
        args = parse_args(saved["argv"] + [a for a in (argv or sys.argv[1:]) if a != "--from-data" and a != args.from_data])
        data = DataSplit(**saved["data"])
    else:
        data = None
    setup = setup_from(args)
    name = args.dataset + ("" if args.architecture == "cnn" else f"-{args.architecture}") + (f"-{args.tag}" if args.tag else "")
    cache = Path(args.cache_dir or RESULTS / "tmp" / f"deletion-{name}")
    if args.save_data:
        data = split_data(setup)
        own = [a for a in (argv or sys.argv[1:])]
        own = [a for i, a in enumerate(own) if a not in ("--save-data", "--save-tokenizer")
               and (i == 0 or own[i - 1] not in ("--save-data", "--save-tokenizer"))]
        write_json_atomic(Path(args.save_data), {"argv": own, "data": data.to_json()})
        if args.save_tokenizer:
            load_tokenizer().save_pretrained(args.save_tokenizer)
        print(f"wrote {args.save_data}")
        return 0
    if args.budget is not None:
        args.time_limit = max(args.budget - (time.time() - start) - 10, 5.0)
    result, experiment = run_deletion_experiment(setup, cache, args.workers, tokenizer=load_tokenizer(args.tokenizer),
                                                 time_limit_s=args.time_limit, data=data)
    info = {**experiment, "workers": args.workers, "time_limit_s": args.time_limit,
            "argv": sys.argv[1:] if argv is None else list(argv)}
    elapsed = time.time() - start
    info["wall_time_s"] = elapsed
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"deletion_{name}.json"
    save_result(result, info, out)
    print_table(result, info, args.dataset, elapsed)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
