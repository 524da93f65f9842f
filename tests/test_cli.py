"""The product commands end to end on real reviews, plus the HF Trainer callback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import tiny_base_model, write_reviews
from tracinwe.cli.app import app
from tracinwe.errors import TracInWEError
from tracinwe.models.checkpoints import CHECKPOINT_INFO_FILE

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    from tracinwe.data import load_dataset_source

    root = tmp_path_factory.mktemp("cli")
    data = load_dataset_source("bundled:rotten-tomatoes").sample(200, seed=1)
    train_csv = write_reviews(root / "train.csv", data.texts[:160], data.labels[:160], data.label_names)
    test_csv = write_reviews(root / "test.csv", data.texts[160:], data.labels[160:], data.label_names)
    base = tiny_base_model(root / "base", tokenizer)
    result = invoke(
        "train", "--data", train_csv, "--text-column", "review", "--label-column", "sentiment", "--model", base,
        "--out", root / "run", "--epochs", 2, "--lr", 0.05, "--optimizer", "sgd", "--checkpoints", 3,
        "--max-length", 48, "--holdout", 0.25, "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    return root, train_csv, test_csv, summary


def test_train_saves_tracin_checkpoints(trained):
    root, _, _, summary = trained
    assert summary["n_train"] == 120 and summary["label_names"] == ["fresh", "rotten"]
    assert len(summary["checkpoints"]) == 3 and summary["learning_rates"] == [0.05] * 3
    assert 0.0 <= summary["heldout_accuracy"] <= 1.0 and summary["n_heldout_scored"] == 40
    for folder in summary["checkpoints"]:
        info = json.loads((Path(folder) / CHECKPOINT_INFO_FILE).read_text())
        assert info["learning_rate"] == 0.05
    run = json.loads((root / "run" / "tracinwe_run.json").read_text())
    assert len(run["train_ids"]) == 120
    assert run["settings"]["optimizer"] == "sgd" and run["settings"]["num_checkpoints"] == 3
    assert not list((root / "run").rglob(".*"))  # every write went through a temporary name, none is left


def test_explain_from_a_run_equals_the_library(trained):
    from tracinwe.data import load_dataset_source
    from tracinwe.tracin import TracInWE

    root, train_csv, _, summary = trained
    text = "a witty , gorgeous film with a boring script ."
    result = invoke("explain", text, "--run-dir", root / "run", "--k", 3, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (r,) = out["results"]
    dataset = load_dataset_source(train_csv, text_column="review", label_column="sentiment").dedupe()
    run = json.loads((root / "run" / "tracinwe_run.json").read_text())
    train = dataset.subset([dataset.ids.index(i) for i in run["train_ids"]])
    tw = TracInWE.from_checkpoints(summary["checkpoints"], max_length=48)
    scores = tw.scores(train.texts, train.labels, [text])[0]
    assert [n["score"] for n in r["proponents"]] == pytest.approx(sorted(scores, reverse=True)[:3], rel=1e-9)
    assert [n["score"] for n in r["opponents"]] == pytest.approx(sorted(scores)[:3], rel=1e-9)
    assert r["prediction"] == int(tw.predict([text])[0].argmax()) and out["label_names"] == ["fresh", "rotten"]
    # the rich view prints the same
    shown = invoke("explain", text, "--run-dir", root / "run", "--k", 2)
    assert shown.exit_code == 0 and "proponents (score > 0)" in shown.stdout and f"{scores.max():+.3g}" in shown.stdout


@pytest.fixture(scope="module")
def index_path(trained):
    root = trained[0]
    result = invoke("index", "build", "--run-dir", root / "run", "--out", root / "index", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["examples"] == 120 and summary["checkpoints"] == 3  # the rows `train` recorded
    return root / "index"


def test_index_build_in_bfloat16_names_it_and_queries_close_to_float32(trained, index_path):
    from tracinwe.index import Index

    root, _, test_csv, _ = trained
    bad = invoke("index", "build", "--run-dir", root / "run", "--out", root / "bad", "--precision", "float16")
    assert bad.exit_code == 2 and "--precision float16: not one of float32, bfloat16" in bad.output
    result = invoke("index", "build", "--run-dir", root / "run", "--out", root / "index-bf16", "--precision", "bfloat16",
                    "--json")
    assert result.exit_code == 0, result.output
    fast, exact = Index.open(root / "index-bf16"), Index.open(index_path)
    assert fast.manifest.settings.capture.precision == "bfloat16" and fast.tracin.settings.precision == "bfloat16"
    assert exact.manifest.settings.capture.precision == "float32"
    texts = ["a witty , gorgeous film with a boring script .", "dull and lifeless"]
    got, want = fast.scores(texts), exact.scores(texts)  # each captures its queries as it was built
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=0.05 * np.abs(want).max())


def test_index_build_indexes_the_run_rows_and_query_matches_the_library(trained, index_path):
    from tracinwe.data import load_dataset_source
    from tracinwe.index import Index
    from tracinwe.tracin import TracInWE

    root, train_csv, test_csv, summary = trained
    index = Index.open(index_path)
    run = json.loads((root / "run" / "tracinwe_run.json").read_text())
    assert index.ids() == run["train_ids"]
    dataset = load_dataset_source(train_csv, text_column="review", label_column="sentiment").dedupe()
    train = dataset.subset([dataset.ids.index(i) for i in run["train_ids"]])
    tests = load_dataset_source(test_csv, text_column="review", label_column="sentiment")
    result = invoke("query", index_path, "--data", test_csv, "--text-column", "review", "--label-column", "sentiment",
                    "--k", 3, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)["results"]
    tw = TracInWE.from_checkpoints(summary["checkpoints"], max_length=48)
    scores = tw.scores(train.texts, train.labels, tests.texts, tests.labels)
    assert len(out) == len(tests) == 40
    for r, row in zip(out, scores):
        assert [n["score"] for n in r["proponents"]] == pytest.approx(np.sort(row)[::-1][:3], rel=1e-5)
        assert [n["score"] for n in r["opponents"]] == pytest.approx(np.sort(row)[:3], rel=1e-5)
    both = invoke("query", index_path, "text", "--data", test_csv)
    assert both.exit_code == 2 and "not both" in both.stderr
    for mode in ("none", "full"):  # the checks are the user's call; the answers are the same
        again = invoke("query", index_path, "--data", test_csv, "--text-column", "review", "--label-column", "sentiment",
                       "--k", 3, "--json", "--verify", mode)
        assert again.exit_code == 0 and json.loads(again.stdout)["results"] == out, mode
    bogus = invoke("query", index_path, "text", "--verify", "sometimes")
    assert bogus.exit_code == 2 and "--verify sometimes: pass one of quick, full, none" in bogus.stderr


def test_explain_self_influence_and_report_from_an_index(trained, index_path):
    from tracinwe.index import Index

    root, _, test_csv, _ = trained
    index = Index.open(index_path)
    text = "the cast is excellent but the movie is a mess ."
    out = json.loads(invoke("explain", text, "--index", index_path, "--k", 2, "--label", "rotten", "--json").stdout)
    (expected,) = index.query([text], [1], k=2)
    assert out["results"][0] == json.loads(json.dumps(expected.to_json()))

    result = invoke("self-influence", "--index", index_path, "--k", 4, "--json")
    assert result.exit_code == 0, result.output
    assert [n["row"] for n in json.loads(result.stdout)] == [n.row for n in index.suspicious(k=4)]
    assert "suspicious training labels" in invoke("self-influence", "--index", index_path, "--k", 2).stdout

    report = root / "report.html"
    result = invoke("report", "--index", index_path, "--data", test_csv, "--text-column", "review",
                    "--label-column", "sentiment", "--n", 3, "--k", 2, "--out", report, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 3 and summary["path"] == str(report) and report.is_file()
    html = report.read_text(encoding="utf-8")
    assert html.count('class="query ') == 3 and html.count('class="neighbor ') == 12


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["explain", "some text"], "exactly one of --index"),
        (["explain", "some text", "--index", "/nonexistent/idx"], "no index at"),
        (["self-influence", "--index", "/nonexistent/idx"], "no index at"),
        (["explain", "x", "--run-dir", "/nonexistent/run", "--data", "bundled:nope"], "unknown bundled dataset"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_columns_labels_and_runtime_failures(trained, index_path):
    root, train_csv, test_csv, _ = trained
    wrong_column = invoke("train", "--data", train_csv, "--text-column", "body", "--out", root / "x")
    assert wrong_column.exit_code == 2 and "body" in wrong_column.stderr
    bad_label = invoke("explain", "fine", "--index", index_path, "--label", "sideways")
    assert bad_label.exit_code == 2 and "sideways" in bad_label.stderr
    from tracinwe.index import Index

    index = Index.open(index_path)
    indexed = write_reviews(root / "indexed.csv", index.texts(), index.labels(), index.label_names)
    own = invoke("report", "--index", index_path, "--data", indexed, "--text-column", "review", "--label-column",
                 "sentiment", "--out", root / "own.html")
    assert own.exit_code == 2 and "every example" in own.stderr  # explaining the indexed rows themselves is refused
    # a runtime failure (the output cannot be written) is exit 1, still one line
    blocked = root / "a_file"
    blocked.write_text("not a folder")
    failed = invoke("report", "--index", index_path, "--data", test_csv, "--text-column", "review",
                    "--label-column", "sentiment", "--n", 1, "--k", 1, "--out", blocked / "report.html")
    assert failed.exit_code == 1 and "failed:" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["demo"], "tracinwe.demo.run_demo"),
        (["evaluate", "deletion"], "tracinwe.evaluate.experiment.run_deletion_experiment"),
        (["evaluate", "lds", "--quick"], "tracinwe.evaluate.experiment.run_lds_experiment"),
        (["fix"], "tracinwe.evaluate.fix_experiment.run_fix_experiment"),
        (["cancellation", "--model", "bundled:minilm-l6", "--data", "bundled:sms-spam"], "tracinwe.data.load_dataset_source"),
        (["mislabel-eval", "--data", "bundled:sms-spam"], "tracinwe.evaluate.mislabel.run_mislabel_detection"),
    ],
)
@pytest.mark.parametrize(("error", "code", "prefix"), [(TracInWEError, 2, "error:"), (RuntimeError, 1, "failed: RuntimeError:")])
def test_every_command_shares_the_exit_codes(monkeypatch, tmp_path, args, target, error, code, prefix):
    """Bad input is exit 2, a runtime failure exit 1, each one line on stderr: in the evaluation and diagnostics commands too."""

    def broken(*_args, **_kwargs):
        raise error("the cause" if error is TracInWEError else "the cause\nand a second line, not shown")

    monkeypatch.setattr(target, broken)
    monkeypatch.chdir(tmp_path)  # default output folders land here, if any were made
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [f"{prefix} the cause"]


def test_help_teaches():
    for command in ("train", "explain", "self-influence", "report", "serve", "query", "index build", "demo", "fix",
                    "evaluate deletion", "cancellation", "mislabel-eval"):
        result = invoke(*command.split(), "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout


def test_every_command_but_serve_prints_json_for_scripts():
    """``--json`` (`cli.common.json_option`) on every command that answers; `serve` runs a server instead."""
    import typer

    def leaves(group, prefix: str = ""):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a command group (index, evaluate)
                yield from leaves(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    found = dict(leaves(typer.main.get_command(app)))
    assert {"train", "explain", "report", "index build", "evaluate lds", "fix", "cancellation", "mislabel-eval"} <= set(found)
    without = [name for name, command in found.items() if not any("--json" in p.opts for p in command.params)]
    assert without == ["serve"]


@pytest.mark.slow
def test_trainer_callback_records_learning_rates(tmp_path, tokenizer):
    """A real (tiny) HF Trainer run with a linear schedule: each checkpoint gets its learning rate."""
    from datasets import Dataset
    from transformers import BertForSequenceClassification, Trainer, TrainingArguments

    from conftest import LABELS, TEXTS
    from tracinwe.tracin import TracInWE
    from tracinwe.training.callback import TracInCheckpointCallback

    model = BertForSequenceClassification.from_pretrained(tiny_base_model(tmp_path / "base", tokenizer))
    enc = tokenizer(TEXTS * 4, truncation=True, max_length=32, padding="max_length")
    train = Dataset.from_dict({**enc, "labels": LABELS * 4})
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=6, save_steps=2, logging_steps=1, learning_rate=1e-3,
        lr_scheduler_type="linear", per_device_train_batch_size=4, report_to=[], use_cpu=True,
        disable_tqdm=True,
    )
    callback = TracInCheckpointCallback()
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    folders = sorted((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in folders] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert callback.saved == [str(p) for p in folders]
    # the Trainer logs the rate each step used
    used = {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    rates = [json.loads((p / CHECKPOINT_INFO_FILE).read_text())["learning_rate"] for p in folders]
    assert rates == pytest.approx([(used[1] + used[2]) / 2, (used[3] + used[4]) / 2, (used[5] + used[6]) / 2])
    assert rates == pytest.approx([1e-3 * x / 12 for x in (11, 7, 3)])  # linear decay to 0 over 6 steps, by hand
    tw = TracInWE.from_checkpoints(folders)  # nothing else needed
    assert tw.learning_rates == pytest.approx(rates)
    assert np.isfinite(tw.self_influence(TEXTS, LABELS)).all()


def test_train_refuses_a_used_run_folder(trained, tmp_path):
    import shutil

    root, train_csv, _, _ = trained
    run = shutil.copytree(root / "run", tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    result = invoke("train", "--data", train_csv, "--text-column", "review", "--label-column", "sentiment",
                    "--model", root / "base", "--out", run, "--epochs", 1)
    assert result.exit_code == 2, result.output
    assert "not empty" in result.stderr and "--overwrite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before  # nothing was written


def test_train_overwrite_replaces_the_run_and_records_the_absolute_data_path(trained, tmp_path, monkeypatch):
    import shutil

    from tracinwe.cli.common import run_training_data

    root, train_csv, _, _ = trained
    run = shutil.copytree(root / "run", tmp_path / "run")
    (run / "checkpoint-999").mkdir()  # a checkpoint the new run would never write
    where = tmp_path / "where-train-ran"
    where.mkdir()
    shutil.copy(train_csv, where / "reviews.csv")
    monkeypatch.chdir(where)
    result = invoke("train", "--data", "reviews.csv", "--text-column", "review", "--label-column", "sentiment",
                    "--model", root / "base", "--out", run, "--epochs", 1, "--checkpoints", 2, "--holdout", 0,
                    "--overwrite", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == sorted(Path(p).name for p in summary["checkpoints"])
    assert len(summary["checkpoints"]) == 2
    assert "Loading weights" not in result.stderr and "\x1b[A" not in result.stderr  # no transformers bars
    info = json.loads((run / "tracinwe_run.json").read_text())
    assert info["data"] == str((where / "reviews.csv").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # `index build --run-dir` / `explain --run-dir` from another folder find the data
    dataset, max_length = run_training_data(run, None, None, None, None)
    assert len(dataset) == summary["n_train"] and dataset.ids == info["train_ids"] and max_length == 64


def test_serve_on_a_port_in_use_exits_2_before_claiming_success(monkeypatch, tmp_path):
    import socket

    import fastapi

    monkeypatch.setattr("tracinwe.cli.commands_product.open_index", lambda path, *args, **kwargs: object())
    monkeypatch.setattr("tracinwe.web.create_app", lambda index, **kwargs: fastapi.FastAPI())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = invoke("serve", tmp_path / "index", "--host", "127.0.0.1", "--port", port)
    assert result.exit_code == 2, result.output
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "explorer on" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_trusts_its_host_and_allow_host_names(monkeypatch, tmp_path):
    import socket

    import fastapi
    import uvicorn

    seen = {}

    def fake_app(index, **kwargs):
        seen.update(kwargs)
        return fastapi.FastAPI()

    monkeypatch.setattr("tracinwe.cli.commands_product.open_index", lambda path, *args, **kwargs: object())
    monkeypatch.setattr("tracinwe.web.create_app", fake_app)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: seen.setdefault("bound", sockets[0].getsockname()))
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("serve", tmp_path / "index", "--host", "127.0.0.1", "--port", port, "--allow-host", "explorer.lan")
    assert result.exit_code == 0, result.output
    assert seen["hosts"] == ["127.0.0.1", "explorer.lan"] and f"http://127.0.0.1:{port}" in result.stderr
    assert seen["bound"] == ("127.0.0.1", port)  # uvicorn serves the socket bound first
