"""`tracinwe evaluate deletion` and `tracinwe fix`: how well influence methods find the examples that matter."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tracinwe.cli.common import exit_codes, json_option
from tracinwe.errors import TracInWEError
from tracinwe.report.terminal import literal, markup_safe, visible

evaluate_app = typer.Typer(
    help="Evaluate influence methods by retraining: LDS (which method to trust on your data) and case deletion (DEL+/DEL-).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Attach ``fix`` and the ``evaluate deletion | lds`` group to the application."""
    app.command("fix")(fix)
    app.add_typer(evaluate_app, name="evaluate")


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise TracInWEError(f"{what} {text!r} is not a comma-separated list of integers, e.g. 10,20,50") from None


def _setup(data, n_train, n_heldout, test_points, ks, seeds, methods, architecture, epochs, learning_rate, batch_size,
           max_length, dim, device, data_seed, text_column=None, label_column=None, subsets=64, default_methods=None):
    from tracinwe.evaluate.experiment import DEFAULT_METHODS, ExperimentSetup
    from tracinwe.training.small import stable_config

    model = stable_config(architecture, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size,
                          max_length=max_length, dim=dim, channels=dim, device=device)
    return ExperimentSetup(source=data, n_train=n_train, n_heldout=n_heldout, n_test_points=test_points,
                           ks=_ints(ks, "--ks"), seeds=_ints(seeds, "--seeds"),
                           methods=tuple(m for m in methods.split(",") if m) if methods else (default_methods or DEFAULT_METHODS),
                           model=model, data_seed=data_seed, text_column=text_column, label_column=label_column,
                           n_subsets=subsets)


_DATA = typer.Option("bundled:sms-spam", "--data", help="Data source: bundled:<name>, a csv/jsonl/parquet file or an HF name.")
_ARCH_HELP = ("Model retrained on each subset: cnn (TokenCNN over BERT ids, from scratch), cnn-minilm (the same CNN, "
              "word embeddings started from MiniLM-L6's), bert-small (from scratch), minilm-l2 or minilm-l6 (the bundled "
              "pretrained MiniLM, fine-tuned).")
_ARCH = typer.Option("cnn", "--model", "--architecture", help=_ARCH_HELP)
#: `evaluate lds` answers "which method should I trust?": its default proxy must learn the user's task and retrain
#: stably; the from-scratch CNN fails the noise gate on sentiment and topic data, cnn-minilm passes it.
_LDS_ARCH = typer.Option("cnn-minilm", "--model", "--architecture", help=_ARCH_HELP)
_RECIPE = "(default: the model's stable recipe, see docs/evaluation.md)"
_JSON = json_option("Print the results as JSON instead of a table.")


@evaluate_app.command("deletion")
def deletion(
    data: str = _DATA,
    n_train: int = typer.Option(1500, help="Training examples (retrains take seconds at this size)."),
    n_heldout: int = typer.Option(500, help="Held-out examples (accuracy; test points are drawn from them)."),
    test_points: int = typer.Option(20, help="Test points, equally many per class, fixed before any scoring."),
    ks: str = typer.Option("10,30,60,100", help="Numbers of deleted training examples."),
    seeds: str = typer.Option("0,1", help="Seeds; each seed's run is scored with its own checkpoints and paired with "
                                         "its retrains."),
    methods: str = typer.Option("", help="Comma-separated methods (default: TracIn-WE, TracIn-WE-Top10, TracIn-last, "
                                         "Representer, IF-last, Grad-Cos-last, TF-IDF, TracIn-middle; also: random)."),
    architecture: str = _ARCH,
    epochs: int = typer.Option(None, help=f"Training epochs {_RECIPE}."),
    learning_rate: float = typer.Option(None, help=f"Learning rate {_RECIPE}."),
    batch_size: int = typer.Option(None, help=f"Batch size {_RECIPE}."),
    max_length: int = typer.Option(48, help="Tokens per text."),
    dim: int = typer.Option(64, help="CNN embedding width and channels."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
    workers: int = typer.Option(2, help="Parallel retraining processes."),
    data_seed: int = typer.Option(0, help="Seed of the split, the sample and the test points."),
    out: Path = typer.Option(Path("deletion-eval"), help="Folder: cached retrains, config.json, results.json."),
    time_limit: float = typer.Option(0, help="Stop starting retrains after this many seconds (0: no limit); rerun to resume."),
    as_json: bool = _JSON,
) -> None:
    """Case deletion: delete each method's top-k proponents (DEL+) / opponents (DEL-), retrain, measure p(gold).

    The retraining noise is measured first. Every retrain is cached in --out, so an interrupted
    run resumes where it stopped.

    Example: tracinwe evaluate deletion --data bundled:sms-spam --test-points 20 --ks 30,100 --out del-sms
    """
    from rich.console import Console

    from tracinwe.evaluate.experiment import run_deletion_experiment, save_result
    from tracinwe.evaluate.noise import NoiseReport

    with exit_codes():
        setup = _setup(data, n_train, n_heldout, test_points, ks, seeds, methods, architecture, epochs, learning_rate,
                       batch_size, max_length, dim, device, data_seed)
        result, info = run_deletion_experiment(setup, out, workers, not as_json, time_limit_s=time_limit or None)
        save_result(result, info, out / "results.json")
    if as_json:
        typer.echo(json.dumps({"experiment": info, **result.to_json()}, indent=1))
        return
    console = Console()
    console.print(result.rich_table(f"{markup_safe(data)} (held-out accuracy {info['heldout_accuracy']:.3f})"))
    console.print(literal(NoiseReport.from_json(result.settings["noise_gate"]).message()))
    console.print(literal(f"results and configuration: {out / 'results.json'}"))


@evaluate_app.command("lds")
def lds(
    data: str = typer.Option(None, "--data", help="Data source: bundled:<name>, a csv/jsonl/parquet file or an HF name "
                                                "(default bundled:sms-spam). With --run-dir: labelled rows the run was "
                                                "not trained on (default: the run's own held-out rows)."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Your `tracinwe train` run folder: the methods score its "
                                                         "checkpoints and each retrain repeats its recipe (seed, "
                                                         "optimizer, epochs). --quick costs about 6x its training "
                                                         "time on 2 cores."),
    text_column: str = typer.Option(None, help="Text column of a CSV/JSONL/Parquet file (default: text)."),
    label_column: str = typer.Option(None, help="Label column of a file (default: label)."),
    n_train: int = typer.Option(2000, help="Training examples (sampled, stratified, from the source)."),
    n_heldout: int = typer.Option(500, help="Held-out examples: test points and accuracy come from them."),
    test_points: int = typer.Option(60, help="Test points, equally many per class, fixed before any scoring."),
    subsets: int = typer.Option(64, help="Random half-size training subsets, each retrained per seed."),
    seeds: str = typer.Option("0,1", help="Seeds; each seed's run is scored with its own checkpoints."),
    methods: str = typer.Option("", help="Comma-separated methods (default: TracIn-WE, TracIn-WE-Top10, TracIn-last, "
                                         "TF-IDF, Grad-Cos-last, random; also Representer, IF-last, TracIn-middle, "
                                         "TracIn@<parameter block>)."),
    architecture: str = _LDS_ARCH,
    quick: bool = typer.Option(False, "--quick", help="32 subsets, one seed, the primary methods: a first answer in minutes."),
    epochs: int = typer.Option(None, help=f"Training epochs {_RECIPE}."),
    learning_rate: float = typer.Option(None, help=f"Learning rate {_RECIPE}."),
    batch_size: int = typer.Option(None, help=f"Batch size {_RECIPE}."),
    max_length: int = typer.Option(48, help="Tokens per text."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu or cuda."),
    workers: int = typer.Option(2, help="Parallel retraining processes."),
    data_seed: int = typer.Option(0, help="Seed of the split, the sample, the test points and the subsets."),
    out: Path = typer.Option(Path("lds-eval"), help="Folder: cached retrains, scores, results.json, lds.png."),
    as_json: bool = _JSON,
) -> None:
    """Which method should I trust here? LDS of each method on your data, with a recommendation.

    LDS (the linear datamodeling score of TRAK, dattri and kronfluence): retrain on random halves
    of the training set and check, per test point, how well each method's summed scores rank the
    retrained models' gold log-odds (Spearman; 1 is perfect, 0 is chance). Retrains are cached in
    --out: a rerun resumes.

    With --run-dir, your own model is evaluated: its checkpoints are scored and every
    retrain repeats its recipe. Without it, a small proxy model (--model) is trained on
    --data: minutes on a CPU, and a guide to which method to trust on text like yours.

    Examples: tracinwe evaluate lds --data my.csv --text-column review --label-column stars --quick --out lds-my
              tracinwe evaluate lds --run-dir runs/mr --quick --out lds-mr
    """
    from rich.console import Console

    from tracinwe.evaluate.experiment import run_lds_experiment, save_result
    from tracinwe.evaluate.noise import NoiseReport
    from tracinwe.evaluate.plots import plot_lds

    default = ("TracIn-WE", "TracIn-WE-Top10", "TracIn-last", "TF-IDF", "Grad-Cos-last", "random")
    if quick:
        subsets, seeds = min(subsets, 32), seeds.split(",")[0]
        default = ("TracIn-WE", "TracIn-last", "TF-IDF", "random")
    source = data or "bundled:sms-spam"
    with exit_codes():
        if run_dir is not None and not run_dir.is_dir():
            raise TracInWEError(f"--run-dir {str(run_dir)!r} is not a folder: pass the --out folder of `tracinwe train`")
        setup = _setup(source, n_train, n_heldout, test_points, "1", seeds, methods, architecture, epochs, learning_rate,
                       batch_size, max_length, 64, device, data_seed, text_column, label_column, subsets, default)
        result, info = run_lds_experiment(setup, out, workers, not as_json, run_dir=run_dir,
                                          run_test_data=data if run_dir is not None else None)
        save_result(result, info, out / "results.json")
        title = f"LDS on {visible(str(run_dir) if run_dir is not None else source)}"
        plot_lds(result, out / "lds.png", title=title)
    if as_json:
        typer.echo(json.dumps({"experiment": info, **result.to_json()}, indent=1))
        return
    console = Console()
    what = f"your run {run_dir}" if run_dir is not None else source
    console.print(result.rich_table(f"LDS, {markup_safe(what)} (held-out accuracy {info['heldout_accuracy']:.3f})"))
    console.print(literal(NoiseReport.from_json(info["noise_gate"]).message()))
    console.print(literal(result.recommendation()), style="bold")
    console.print(literal(f"results: {out / 'results.json'}, plot: {out / 'lds.png'}"))


def fix(
    data: str = _DATA,
    n_train: int = typer.Option(1500, help="Training examples."),
    n_heldout: int = typer.Option(500, help="Held-out examples: mistakes are looked for here, accuracy is measured here."),
    delete_count: int = typer.Option(20, help="Top opponents deleted (the paper's m = 50 of 50,000)."),
    mask_count: int = typer.Option(20, help="Top opponents whose most negative shared word is masked (paper: 200); "
                                            "equal to --delete-count by default, so every strategy edits as many rows."),
    delete_methods: str = typer.Option("TracIn-WE,TracIn-WE-Top10,IF-last,TracIn-last", help="Methods proposing deletions."),
    mask_methods: str = typer.Option("TracIn-WE", help="TracIn-WE methods proposing words to mask."),
    max_cases: int = typer.Option(20, help="At most this many mistakes are fixed per seed."),
    low: float = typer.Option(0.3, help="Only mistakes with gold-class probability >= low ..."),
    high: float = typer.Option(0.7, help="... and <= high."),
    architecture: str = _ARCH,
    epochs: int = typer.Option(None, help=f"Training epochs {_RECIPE}."),
    learning_rate: float = typer.Option(None, help=f"Learning rate {_RECIPE}."),
    batch_size: int = typer.Option(None, help=f"Batch size {_RECIPE}."),
    max_length: int = typer.Option(48),
    dim: int = typer.Option(64),
    device: str = typer.Option("auto"),
    seeds: str = typer.Option("0,1,2", help="Seeds: each seed's model, its own mistakes and its own scores."),
    data_seed: int = typer.Option(0),
    workers: int = typer.Option(1, help="Parallel retraining processes."),
    out: Path = typer.Option(None, help="Write the full results (proposals, outcomes, config) to this JSON file."),
    cache_dir: Path = typer.Option(None, help="Keep the retrains here, so a rerun resumes (default: a temporary folder)."),
    as_json: bool = json_option("Print JSON instead of a table."),
) -> None:
    """Fix mistakes: delete the top opponents of a misclassified example (or mask their worst shared word), retrain.

    Reports per strategy how many mistakes became correct (McNemar's test against deleting as many
    random rows with the same seed) and what it cost in held-out accuracy, next to plain retraining
    with another seed.

    Example: tracinwe fix --data bundled:reuters-r8 --n-heldout 2000 --seeds 0,1,2 --out fix.json
    """
    from rich.console import Console

    from tracinwe.evaluate.fix_experiment import FixSetup, run_fix_experiment
    from tracinwe.io import write_json_atomic

    with exit_codes():
        experiment = _setup(data, n_train, n_heldout, 1, "1", seeds, "", architecture, epochs, learning_rate,
                            batch_size, max_length, dim, device, data_seed, default_methods=("random",))
        setup = FixSetup(experiment, delete_count, mask_count, tuple(m for m in delete_methods.split(",") if m),
                         tuple(m for m in mask_methods.split(",") if m), low, high, max_cases, workers=workers)
        result = run_fix_experiment(setup, progress=not as_json, cache_dir=cache_dir)
        if out is not None:
            write_json_atomic(out, result.to_json())
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
        return
    console = Console()
    if not result.cases:
        console.print(f"no misclassified held-out example has a gold-class probability in [{low}, {high}]: nothing to fix")
        return
    console.print(result.rich_table(markup_safe(data)))
