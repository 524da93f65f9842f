"""What the data holds cannot subvert the terminal or the labels: CLI runs on hostile texts and files."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe.cli.app import app

HOSTILE = "[/red] [link=http://x]y[/link] \x1b[31mred\x1b[0m \x1b]8;;http://x\x07click\x1b]8;;\x07 movie"
NAMES = ("neg", "pos[/b]")  # a label name that is also a closing markup tag
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


def write_csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def hostile_index(tokenizer, tmp_path_factory):
    """A tiny two-checkpoint index whose training texts carry markup and escape sequences."""
    from tracinwe.models.checkpoints import write_checkpoint_info

    root = tmp_path_factory.mktemp("hostile")
    for step, (seed, lr) in enumerate(((8, 0.1), (9, 0.02)), start=1):
        folder = root / "run" / f"checkpoint-{step}"
        tiny_bert(seed, 2).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_checkpoint_info(folder, lr, step=step)
    rows = [(f"{t} #{i}", NAMES[y]) for i, (t, y) in enumerate(zip(TEXTS * 3, LABELS * 3))]
    rows += [(f"{HOSTILE} #{i}", NAMES[i % 2]) for i in range(4)]
    table = write_csv(root / "train.csv", rows)
    out = invoke("index", "build", "--out", root / "idx", "--run-dir", root / "run", "--data", table, "--max-length", "48")
    assert out.exit_code == 0, out.output
    return root


def assert_shown_literally(output: str) -> None:
    assert "[/red] [link=http://x]y[/link]" in output  # markup printed as written, not parsed
    assert "\x1b" not in output and "\x07" not in output  # no escape sequence reaches the terminal
    assert "\\x1b[31mred\\x1b[0m" in output  # ... it is shown, visibly


def test_self_influence_explain_and_query_print_hostile_texts_literally(hostile_index):
    root = hostile_index
    out = invoke("self-influence", "--index", root / "idx", "--k", "30")
    assert out.exit_code == 0, out.output
    assert_shown_literally(out.output)
    assert "pos[/b]" in out.output

    out = invoke("explain", HOSTILE, "--index", root / "idx", "--k", "30", "--label", NAMES[1])
    assert out.exit_code == 0, out.output
    assert_shown_literally(out.output)
    assert "gold: pos[/b]" in out.output

    query_file = write_csv(root / "queries.csv", [(HOSTILE, NAMES[1]), (TEXTS[0], NAMES[0])])
    out = invoke("query", root / "idx", "--data", query_file, "--k", "30", "--words", "3")
    assert out.exit_code == 0, out.output
    assert_shown_literally(out.output)


def test_file_names_in_errors_are_literal(hostile_index):
    out = invoke("query", hostile_index / "idx", "--data", hostile_index / "missing[/red]\x1b[2J.csv")
    assert out.exit_code == 2, out.output
    assert "missing[/red]\\x1b[2J.csv" in out.output and "\x1b" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_query_data_labels_are_mapped_by_name_or_refused(hostile_index):
    root = hostile_index
    positives = write_csv(root / "positives.csv", [(TEXTS[0], NAMES[1]), (TEXTS[2], NAMES[1])])  # one class only
    out = invoke("query", root / "idx", "--data", positives, "--k", "2", "--json")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["label_names"] == list(NAMES)
    assert [r["label"] for r in result["results"]] == [1, 1]  # "pos[/b]" is class 1 of the index, not class 0 of the file

    unknown = write_csv(root / "neutral.csv", [(TEXTS[0], NAMES[1]), (TEXTS[1], "neutral")])
    out = invoke("query", root / "idx", "--data", unknown)
    assert out.exit_code == 2, out.output
    assert "'neutral'" in out.output and "neg, pos[/b]" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_words_zero_says_words_were_not_computed(hostile_index):
    out = invoke("query", hostile_index / "idx", TEXTS[0], "--k", "2", "--words", "0")
    assert out.exit_code == 0, out.output
    assert "not computed" in out.output and "only [CLS]/[SEP]" not in out.output
    out = invoke("query", hostile_index / "idx", TEXTS[0], "--k", "2", "--words", "3")
    assert out.exit_code == 0, out.output
    assert "not computed" not in out.output


def test_index_build_maps_data_labels_to_the_checkpoint_classes(tokenizer, tmp_path):
    """A checkpoint that names its classes decides their order; a label it lacks is refused."""
    from tracinwe.index import Index
    from tracinwe.models.checkpoints import write_checkpoint_info

    folder = tmp_path / "checkpoint-1"
    model = tiny_bert(3, 2)
    model.config.id2label, model.config.label2id = {0: "pos", 1: "neg"}, {"pos": 0, "neg": 1}  # not sorted order
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_checkpoint_info(folder, 0.1, step=1)
    rows = [(f"{t} #{i}", "pos" if y else "neg") for i, (t, y) in enumerate(zip(TEXTS * 2, LABELS * 2))]
    out = invoke("index", "build", "--out", tmp_path / "idx", "--checkpoint", folder,
                 "--data", write_csv(tmp_path / "d.csv", rows), "--max-length", "32")
    assert out.exit_code == 0, out.output
    index = Index.open(tmp_path / "idx")
    assert index.label_names == ["pos", "neg"]
    assert [index.label_names[y] for y in index.labels()] == [name for _, name in rows]

    rows[3] = (rows[3][0], "neutral")
    out = invoke("index", "build", "--out", tmp_path / "idx2", "--checkpoint", folder,
                 "--data", write_csv(tmp_path / "e.csv", rows))
    assert out.exit_code == 2 and "'neutral'" in out.output and "(pos, neg)" in out.output
