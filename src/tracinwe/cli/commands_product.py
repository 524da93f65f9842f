"""`tracinwe train | explain | self-influence | report | serve`: the product commands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from tracinwe.cli.common import (
    CHECKPOINTS_FROM,
    JSON_OPTION,
    LABEL_COLUMN,
    PAIR_COLUMN,
    TEXT_COLUMN,
    VERIFY,
    exit_codes,
    label_ids,
    load_data,
    open_index,
    output_console,
    print_checkpoint_table,
    print_json,
    run_training_data,
    stderr,
)
from tracinwe.errors import TracInWEError
from tracinwe.report.terminal import literal, markup_safe
from tracinwe.run import checkpoint_folders, with_label_names


def register(app: typer.Typer) -> None:
    """Attach ``train``, ``explain``, ``self-influence``, ``report`` and ``serve`` to the application."""
    app.command()(train)
    app.command()(explain)
    app.command("self-influence")(self_influence)
    app.command()(report)
    app.command()(serve)


# -- train --------------------------------------------------------------------------------------


def train(
    data: str = typer.Option(
        ..., help="Training data: bundled:NAME, a csv/jsonl/parquet file, a saved HF dataset or a hub name."),
    out: Path = typer.Option(..., help="Run folder: checkpoint-STEP folders, each with its learning rate."),
    task: str = typer.Option("classification", help="classification, or causal-lm (a decoder on documents, no labels)."),
    model: str = typer.Option(None, help="Base model: bundled:minilm-l6 (classification default), a local HF folder or a "
                                         "hub id; for causal-lm gpt2-tiny (default: a 2-layer GPT-2 and a BPE tokenizer "
                                         "trained from scratch on the data) or a *ForCausalLM folder to fine-tune."),
    text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN, text_pair_column: str = PAIR_COLUMN,
    prompt_column: str = typer.Option(None, help="causal-lm: column of prompts (with --completion-column; the loss "
                                                 "covers only the completion)."),
    completion_column: str = typer.Option(None, help="causal-lm: column of completions."),
    epochs: float = typer.Option(2.0, min=0.01, help="Passes over the training set."),
    lr: float = typer.Option(None, min=0.0, help="Learning rate (default 5e-5; causal-lm gpt2-tiny 3e-3)."),
    batch_size: int = typer.Option(16, min=1),
    checkpoints: int = typer.Option(3, min=1, max=20, help="Checkpoints to save, evenly spaced (TracIn uses 3-5)."),
    optimizer: str = typer.Option("adamw", help="adamw, or sgd (with momentum 0.9, as in the paper)."),
    schedule: str = typer.Option("constant", help="constant, or linear decay to zero."),
    max_length: int = typer.Option(64, min=8, help="Tokens per text (longer texts are truncated)."),
    n_train: int = typer.Option(None, min=1, help="Train on a (stratified) sample of this many examples."),
    holdout: float = typer.Option(None, min=0.0, max=0.9, help="Fraction held out to measure accuracy (default 0.2; "
                                                               "causal-lm: 0, else the held-out loss per token)."),
    seed: int = typer.Option(0, help="Seed for the split, the sample, the new head and the batch order."),
    overwrite: bool = typer.Option(False, help="Train into a non-empty --out folder, deleting its old checkpoints first."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Fine-tune a HuggingFace classifier (or a causal LM) and save TracIn checkpoints (weights + learning rate).

    --task causal-lm trains a decoder on a text column (or --prompt-column / --completion-column
    pairs); labels are not used. Its run is explained with `tracinwe explain --generate`.

    Example: tracinwe train --data bundled:rotten-tomatoes --n-train 2000 --out runs/mr
    Example: tracinwe train --task causal-lm --data bundled:rotten-tomatoes --n-train 500 --epochs 1 --out runs/lm
    """
    with exit_codes():
        from tracinwe.run import check_run_folder, train_run
        from tracinwe.training import TrainConfig

        if optimizer not in ("adamw", "sgd") or schedule not in ("constant", "linear"):
            raise TracInWEError(f"--optimizer {optimizer!r} / --schedule {schedule!r}: use adamw|sgd and constant|linear")
        if task not in ("classification", "causal-lm"):
            raise TracInWEError(f"--task {task!r}: use classification or causal-lm")
        if task == "causal-lm":
            from tracinwe.cli.commands_lm import LMTrainRequest, train_causal_lm

            if label_column or text_pair_column or schedule != "constant":
                raise TracInWEError("--task causal-lm takes no --label-column, --text-pair-column or --schedule linear")
            train_causal_lm(LMTrainRequest(
                data=data, out=out, model=model or "gpt2-tiny", columns=(text_column, prompt_column, completion_column),
                epochs=epochs, lr=lr, batch_size=batch_size, checkpoints=checkpoints, optimizer=optimizer,
                max_length=max_length, n_train=n_train, holdout=holdout or 0.0, seed=seed, overwrite=overwrite,
            ), json_out)
            return
        if prompt_column or completion_column:
            raise TracInWEError("--prompt-column / --completion-column are for --task causal-lm")
        model = model or "bundled:minilm-l6"
        lr = 5e-5 if lr is None else lr
        holdout = 0.2 if holdout is None else holdout
        check_run_folder(out, overwrite)
        dataset = load_data(data, text_column, label_column, text_pair_column).dedupe()
        train_set, held = dataset.split(holdout, seed) if holdout > 0 else (dataset, None)
        if n_train is not None:
            train_set = train_set.sample(n_train, seed=seed)
        config = TrainConfig(epochs=epochs, learning_rate=lr, batch_size=batch_size, num_checkpoints=checkpoints,
                             optimizer=optimizer, schedule=schedule, max_length=max_length, seed=seed)
        columns = {"text_column": text_column, "label_column": label_column, "text_pair_column": text_pair_column}
        summary = train_run(out, model, train_set, config, heldout=held, data=data, columns=columns, overwrite=overwrite,
                            status=lambda message: stderr.status(literal(message)))
    if json_out:
        print_json(summary)
        return
    console = print_checkpoint_table(f"run {out}", summary, json_out)
    acc = summary["heldout_accuracy"]
    console.print(f"{summary['n_train']} training examples, final loss {summary['final_loss']:.3f}"
                  + (f", held-out accuracy {acc:.1%} on {summary['n_heldout_scored']}" if acc is not None else ""))
    console.print(literal(f"next: tracinwe index build --run-dir {out} ...  or  tracinwe explain \"some text\" --run-dir {out}"))


# -- explain ------------------------------------------------------------------------------------


def explain(
    texts: list[str] = typer.Argument(None, help="The text(s) to explain (classifiers)."),
    index: Path = typer.Option(None, help="An index built by `tracinwe index build` (fast; classifiers only)."),
    run_dir: Path = typer.Option(None, help="A `tracinwe train` run folder (recomputes; for small training sets)."),
    data: str = typer.Option(None, help="Training data for --run-dir (default: the data recorded by `train`)."),
    text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN, text_pair_column: str = PAIR_COLUMN,
    label: list[str] = typer.Option(None, help="Explain this label (name or index) instead of the prediction."),
    k: int = typer.Option(5, "--k", "-k", min=1, help="Proponents and opponents to show."),
    words: int = typer.Option(5, min=0, help="Shared words listed per neighbour."),
    generate: str = typer.Option(None, help="Causal LM: explain the completion of this prompt (greedy, by the final "
                                            "checkpoint) token by token. With --index (`tracinwe index build` on the LM "
                                            "run) the proponents come from the index."),
    completion: str = typer.Option(None, help="With --generate: explain this completion instead of generating one."),
    max_new_tokens: int = typer.Option(20, min=1, help="With --generate: tokens to generate."),
    checkpoints: list[Path] = typer.Option(None, help="With --generate: a run folder or checkpoint folders "
                                                      "(repeat the option), instead of --run-dir."),
    prompt_column: str = typer.Option(None, help="With --generate: prompt column of --data (with --completion-column)."),
    completion_column: str = typer.Option(None, help="With --generate: completion column of --data."),
    html: Path = typer.Option(None, help="With --generate: also write a self-contained HTML page of the explanation."),
    checkpoints_from: Path = CHECKPOINTS_FROM,
    json_out: bool = JSON_OPTION,
) -> None:
    """Explain a prediction: its proponents, its opponents and the shared words that carry them.

    Proponents (score > 0) are training examples whose gradient step lowered this text's loss;
    opponents (score < 0) raised it. --index answers from stored gradients; --run-dir recomputes
    over the run's training data (small sets only). --generate explains a causal LM's completion:
    each completion token's top supporting documents and the completion's proponents/opponents.

    Example: tracinwe explain "a gorgeous, witty, seductive movie" --index mr.index
    Example: tracinwe explain --generate "The film is" --run-dir runs/lm --max-new-tokens 8 --html gen.html
    """
    with exit_codes():
        if generate is not None:
            _explain_generation(generate, texts, index, label, run_dir, checkpoints, data,
                                (text_column, prompt_column, completion_column), completion, max_new_tokens, k, words, html,
                                json_out, checkpoints_from)
            return
        if not texts:
            raise TracInWEError("pass the text(s) to explain (or --generate PROMPT for a causal language model)")
        if completion is not None or checkpoints or html is not None:
            raise TracInWEError("--completion, --checkpoints and --html go with --generate PROMPT")
        if run_dir is not None:
            from tracinwe.lm_run import is_lm_run

            if is_lm_run(run_dir):
                raise TracInWEError(f"{str(run_dir)!r} is a causal language model run: explain it with --generate PROMPT")
        if (index is None) == (run_dir is None):
            raise TracInWEError("pass exactly one of --index INDEX or --run-dir RUN_DIR")
        if index is not None:
            idx = open_index(index, checkpoints_from)
            names = idx.label_names
            with stderr.status(f"explaining {len(texts)} text(s) ..."):
                results = idx.query(texts, label_ids(label, len(texts), names), k=k, words=words)
        else:
            results, names = _explain_from_run(run_dir, texts, label, k, words, data, text_column, label_column, text_pair_column)
    if json_out:
        print_json({"label_names": names, "results": [r.to_json() for r in results]})
        return
    from tracinwe.report.console import result_tables

    console = output_console(json_out)
    for r in results:
        head, tables = result_tables(r, names, gold=bool(label), words=words > 0)
        console.print(head)
        for t in tables:
            console.print(t)


def _explain_generation(prompt: str, texts, index, label, run_dir, checkpoints, data, columns, completion,
                        max_new_tokens: int, k: int, words: int, html, json_out: bool, checkpoints_from=None) -> None:
    from tracinwe.cli.commands_lm import GenerateRequest, checkpoint_list, explain_generate

    if texts or label:
        raise TracInWEError("--generate explains one prompt: drop the text arguments and --label")
    if index is not None:
        if run_dir is not None or checkpoints or data is not None:
            raise TracInWEError("--generate with --index reads the documents and checkpoints from the index: "
                                "drop --run-dir, --checkpoints and --data")
        folders, run = [], None
    else:
        folders, run = checkpoint_list(run_dir, checkpoints)
    explain_generate(GenerateRequest(prompt=prompt, folders=folders, run_dir=run, data=data, columns=columns,
                                     completion=completion, max_new_tokens=max_new_tokens, k=k, words=words, html=html,
                                     index=index, checkpoints_from=checkpoints_from),
                     json_out)


def _explain_from_run(run_dir: Path, texts, label, k, words, data, text_column, label_column, pair_column):
    from tracinwe.explain import explain_with_tracin
    from tracinwe.tracin import TracInWE

    dataset, max_length = run_training_data(run_dir, data, text_column, label_column, pair_column)
    tw = TracInWE.from_checkpoints(checkpoint_folders(run_dir), max_length=max_length, progress=True)
    results, _ = explain_with_tracin(
        tw, dataset.texts, dataset.labels, texts, label_ids(label, len(texts), dataset.label_names),
        k=k, words=words, ids=dataset.ids, label_names=dataset.label_names,
    )
    return results, dataset.label_names


# -- self-influence -----------------------------------------------------------------------------


def self_influence(
    index: Path = typer.Option(..., help="An index built by `tracinwe index build`."),
    k: int = typer.Option(20, min=1, help="How many examples to list."),
    checkpoints_from: Path = CHECKPOINTS_FROM,
    json_out: bool = JSON_OPTION,
) -> None:
    """The training examples most likely mislabeled: highest self-influence first.

    Example: tracinwe self-influence --index mr.index --k 20
    """
    with exit_codes():
        found = open_index(index, checkpoints_from).suspicious(k=k)
    if json_out:
        print_json([n.to_json() for n in found])
        return
    from tracinwe.report.console import suspicious_table

    output_console(json_out).print(suspicious_table(found))


# -- report -------------------------------------------------------------------------------------


def report(
    index: Path = typer.Option(..., help="An index built by `tracinwe index build`."),
    data: str = typer.Option(
        ..., help="Test data with gold labels (same label names as the index); rows in the index are skipped."),
    text_column: str = TEXT_COLUMN, label_column: str = LABEL_COLUMN, text_pair_column: str = PAIR_COLUMN,
    split: str = typer.Option("train", help="Split of a HF dataset; 'test' picks a bundled corpus' *-test set."),
    n: int = typer.Option(8, min=1, help="Test examples to explain."),
    mistakes: bool = typer.Option(True, help="Pick up to half misclassified examples (else the first n)."),
    pool: int = typer.Option(200, min=1, help="Examples predicted to find the misclassified ones."),
    k: int = typer.Option(5, min=1, help="Proponents and opponents per example."),
    suspicious: int = typer.Option(20, min=0, help="Suspicious training labels listed."),
    out: Path = typer.Option(Path("report.html"), help="The HTML file to write."),
    title: str = typer.Option("TracIn-WE report", help="Page title."),
    seed: int = typer.Option(0, help="Seed for the sample of the test data."),
    checkpoints_from: Path = CHECKPOINTS_FROM,
    json_out: bool = JSON_OPTION,
) -> None:
    """Write a self-contained HTML report of test examples, proponents, opponents and suspicious labels.

    One file, no network: each example's text, gold label, prediction and probability; its
    proponents and opponents with every shared word highlighted by its contribution (hover for
    the value); the suspicious labels by self-influence; score histograms.

    Example: tracinwe report --index mr.index --data reviews_test.csv --n 8 --out report.html
    """
    with exit_codes():
        summary = _write_report(_ReportRequest(
            index=index, data=data, columns=(text_column, label_column, text_pair_column), split=split, n=n,
            mistakes=mistakes, pool=pool, k=k, n_suspicious=suspicious, out=out, title=title, seed=seed,
            checkpoints_from=checkpoints_from,
        ))
    if json_out:
        print_json(summary)
    else:
        output_console(json_out).print(
            f"wrote [bold]{markup_safe(out)}[/bold]: {summary['n']} examples ({summary['misclassified']} misclassified), "
            f"{summary['suspicious']} suspicious labels")


@dataclass(frozen=True)
class _ReportRequest:
    """What `tracinwe report` is asked for: the index, the test data, which examples to explain, the page to write."""

    index: Path
    data: str
    columns: tuple[str | None, str | None, str | None]  # text, label and pair columns of ``data``
    split: str
    n: int  # test examples explained
    mistakes: bool  # up to half of them misclassified, found among ``pool`` predicted examples
    pool: int
    k: int  # proponents and opponents per example
    n_suspicious: int
    out: Path
    title: str
    seed: int
    checkpoints_from: Path | None = None


def _write_report(request: _ReportRequest) -> dict:
    from tracinwe.report.html import render_report
    from tracinwe.report.selection import pick_examples

    r = request
    idx = open_index(r.index, r.checkpoints_from)
    dataset = with_label_names(load_data(r.data, *r.columns, split=r.split), idx.label_names, r.data)
    indexed = set(idx.texts())  # an example explained against its own copy says nothing: skip those
    dataset = dataset.subset([i for i, t in enumerate(dataset.texts) if t not in indexed])
    if not len(dataset):
        raise TracInWEError(f"every example of {r.data} is in the index: pass held-out test data")
    candidates = dataset.sample(r.pool if r.mistakes else r.n, seed=r.seed)
    with stderr.status(f"predicting {len(candidates)} test examples ..."):
        probs = idx.tracin.predict(candidates.texts)
    chosen = candidates.subset(pick_examples(probs, candidates.labels, r.n, r.mistakes))
    with stderr.status(f"explaining {len(chosen)} examples against {len(idx)} training examples ..."):
        results = idx.query(chosen.texts, chosen.labels, k=r.k, words=None)  # every shared word, for the highlighting
        scores = idx.scores(chosen.texts, chosen.labels)
        found = idx.suspicious(k=r.n_suspicious) if r.n_suspicious else []
        values = idx.self_influence()
    render_report(
        results, found, idx.label_names, r.title, r.out, tokenizer=idx.tracin, scores=scores, self_influence=values,
        note=f"Index {r.index} ({len(idx)} training examples); test data {r.data}.",
    )
    return {"path": str(r.out), "n": len(results), "misclassified": sum(x.prediction != x.label for x in results),
            "suspicious": len(found)}


# -- serve --------------------------------------------------------------------------------------


def serve(
    index: Path = typer.Argument(..., help="An index built by `tracinwe index build`."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    allow_host: list[str] = typer.Option(None, help="A further name the page may be opened by (the Host header); "
                                                     "127.0.0.1, localhost, ::1 and --host are always allowed."),
    checkpoints_from: Path = CHECKPOINTS_FROM,
    verify: str = VERIFY,
) -> None:
    """Start the browser explorer on an index: type a sentence, see who supports and opposes it.

    The page shows the prediction, the proponents and opponents with highlighted words, and the
    suspicious labels. JSON API: POST /api/explain, GET /api/suspicious?k=20, GET /api/health.
    On a causal-LM index (index build --run-dir LM_RUN) it explains completions instead: type a
    prompt, click a completion token to see the training documents that most support it
    (POST /api/generate).
    A port already in use is reported (exit 2) before the index is opened.

    Example: tracinwe serve mr.index --port 8000, then open http://127.0.0.1:8000
    """
    with exit_codes():
        import uvicorn

        from tracinwe.web import create_app

        sock = _listen_socket(host, port)
        try:
            application = create_app(open_index(index, checkpoints_from, verify), hosts=[host, *(allow_host or [])])
            stderr.print(f"explorer on [bold]http://{markup_safe(host)}:{port}[/bold] (Ctrl+C to stop)")
            uvicorn.Server(uvicorn.Config(application, host=host, port=port, log_level="warning")).run(sockets=[sock])
        finally:
            sock.close()


def _listen_socket(host: str, port: int):
    """A socket bound to ``host:port``, or a one-line error if the port is taken or the host unknown."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise TracInWEError(f"--host {host!r} is not an address of this machine ({exc.strerror}): pass 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TracInWEError(f"port {port} on {host} is in use: stop the other server or pass --port") from None
        raise TracInWEError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --host or --port") from None
    sock.set_inheritable(True)
    return sock
