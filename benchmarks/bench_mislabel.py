"""Mislabel detection by self-influence on real data: flip 10% of the labels, train, rank, measure.

For each data set and seed: a de-duplicated stratified sample, 10% of its labels
flipped (seeded), a small model trained on the noisy labels with SGD +
momentum and several checkpoints, and the training examples ranked by the
self-influence of TracIn-WE, TracIn-WE-Top10, last-layer TracIn, TracIn on a
middle layer, the loss and random scores. Reports the detection ROC AUC and the
share of flipped labels in the top 10% / 20%, mean and standard deviation over
seeds. On the crowd-labelled Twitter set (no flips), it relates self-influence
to the annotators' confidence column instead.

    python benchmarks/bench_mislabel.py                                   # the full run
    python benchmarks/bench_mislabel.py --datasets sms-spam --n 500 --seeds 0 --tag smoke
    python benchmarks/bench_mislabel.py --save-bundle DIR                 # data + tokenizer, for another machine
    python benchmarks/bench_mislabel.py --bundle DIR --device cuda        # run from it (no data packages needed)

Writes benchmarks/results/mislabel_<dataset>[_<tag>].json with the configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: data set -> share of labels flipped (0: relate to the annotators' confidence instead)
DEFAULT_DATASETS = "sms-spam:0.1,rotten-tomatoes:0.1,twitter-sentiment:0"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=DEFAULT_DATASETS, help="comma-separated NAME:FLIP (bundled names)")
    p.add_argument("--n", type=int, default=3000, help="training texts per run")
    p.add_argument("--heldout", type=int, default=500)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="TracIn-WE,TracIn-WE-Top10,TracIn-last,TracIn-middle,loss,random")
    p.add_argument("--architecture", default="cnn", choices=["cnn", "bert-small"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--checkpoints", type=int, default=3)
    p.add_argument("--max-length", type=int, default=48)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--tag", default="")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--save-bundle", default=None, help="write the data sets and the tokenizer to this folder, stop")
    p.add_argument("--bundle", default=None, help="read the data sets and the tokenizer from this folder")
    return p.parse_args(argv)


def _datasets(spec: str) -> list[tuple[str, float]]:
    out = []
    for item in spec.split(","):
        name, _, flip = item.partition(":")
        out.append((name.strip(), float(flip or 0.1)))
    return out


def save_bundle(folder: Path, names: list[str]) -> None:
    """The de-duplicated data sets (JSON) and the tokenizer, so another machine needs no data packages."""
    from tracinwe.data import load_dataset_source
    from tracinwe.evaluate.experiment import load_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    load_tokenizer().save_pretrained(folder / "tokenizer")
    for name in names:
        d = load_dataset_source(f"bundled:{name}").dedupe()
        payload = {"texts": d.texts, "labels": d.labels, "label_names": d.label_names, "ids": d.ids, "name": d.name,
                   "extra": d.extra}
        (folder / f"{name}.json").write_text(json.dumps(payload))
        print(f"saved {name}: {len(d)} rows")


def load_from_bundle(folder: Path, name: str):
    from tracinwe.data import TextDataset

    payload = json.loads((folder / f"{name}.json").read_text())
    return TextDataset(**payload)


def _versions(device: str) -> dict:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "machine": platform.machine(), "device": device, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}


def summarise(reports: list) -> dict:
    """Mean and standard deviation over seeds, per method."""
    out: dict[str, dict] = {}
    for metric in ("auc", "top 10%", "top 20%"):
        for d in (d for r in reports for d in r.detection):
            value = d.auc if metric == "auc" else d.found[metric]
            out.setdefault(d.method, {}).setdefault(metric, []).append(value)
    for c in (c for r in reports for c in r.confidence):
        entry = out.setdefault(c.method, {})
        entry.setdefault("spearman", []).append(c.spearman)
        entry.setdefault("confidence_top_decile", []).append(c.mean_confidence_top_decile)
        entry.setdefault("confidence_rest", []).append(c.mean_confidence_rest)
    for d in (d for r in reports for d in r.detection):
        out[d.method].setdefault("seconds", []).append(d.seconds)
    for r in reports:
        for method, rho in r.length_spearman.items():
            out.setdefault(method, {}).setdefault("length_spearman", []).append(rho)
    return {m: {k: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
                for k, v in metrics.items()} for m, metrics in out.items()}


def print_table(name: str, flip: float, summary: dict, reports: list) -> None:
    from rich.console import Console
    from rich.table import Table

    t = [r.training for r in reports]
    title = (f"{name}: {t[0]['n_train']} training texts, {len(reports)} seeds, "
             + (f"{flip:.0%} labels flipped" if flip else "no flips (annotator confidence)")
             + f"; held-out acc. {np.mean([x['heldout_accuracy'] for x in t]):.3f}"
             + (f", flipped labels memorised {np.mean([x['flipped_memorised'] for x in t]):.2f}" if flip else ""))
    table = Table(title=title)
    table.add_column("method")
    cols = ["auc", "top 10%", "top 20%"] if flip else ["spearman", "confidence_top_decile", "confidence_rest"]
    cols.append("length_spearman")
    for col in cols + ["seconds"] * bool(flip):
        table.add_column(col, justify="right")
    for method, metrics in summary.items():
        row = [method] + [f"{metrics[c]['mean']:.3f} ± {metrics[c]['std']:.3f}" for c in cols]
        if flip:
            row.append(f"{metrics['seconds']['mean']:.1f}")
        table.add_row(*row)
    Console(width=160).print(table)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    datasets = _datasets(args.datasets)
    if args.save_bundle:
        save_bundle(Path(args.save_bundle), [n for n, _ in datasets])
        return 0
    from tracinwe.evaluate.mislabel import MislabelSetup, run_mislabel_detection
    from tracinwe.io import write_json_atomic
    from tracinwe.training.small import SmallModelConfig

    tokenizer = None
    if args.bundle:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(Path(args.bundle) / "tokenizer")
    model = SmallModelConfig(architecture=args.architecture, epochs=args.epochs, learning_rate=args.learning_rate,
                             num_checkpoints=args.checkpoints, max_length=args.max_length, dim=args.dim,
                             channels=args.dim, device=args.device)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, flip in datasets:
        started = time.time()
        data = load_from_bundle(Path(args.bundle), name) if args.bundle else None
        reports = []
        for seed in (int(s) for s in args.seeds.split(",")):
            setup = MislabelSetup(f"bundled:{name}", n=args.n, flip_fraction=flip, seed=seed, n_heldout=args.heldout,
                                  methods=tuple(args.methods.split(",")), model=model)
            print(f"{name}, seed {seed}:", flush=True)
            reports.append(run_mislabel_detection(setup, tokenizer=tokenizer, data=data))
        summary = summarise(reports)
        print_table(name, flip, summary, reports)
        out = RESULTS / f"mislabel_{name}{'_' + args.tag if args.tag else ''}.json"
        write_json_atomic(out, {
            "benchmark": "mislabel detection by self-influence",
            "command": "python benchmarks/bench_mislabel.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "versions": _versions(reports[0].setup.model.run_device),
            "wall_time_s": round(time.time() - started, 1),
            "summary": summary,
            "runs": [r.to_json() for r in reports],
        })
        print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
