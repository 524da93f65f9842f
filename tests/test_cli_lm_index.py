"""`tracinwe index build` on a causal-LM run, and `explain --generate` answered from that index: the same
proponents and opponents (rows, ids, scores) as recomputing over the run's training documents; an index or run of
the other task is a one-line error.

A gpt2-tiny decoder trained from scratch by the CLI on 120 real Rotten Tomatoes snippets (1 epoch).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe.cli.app import app
from tracinwe.cli.commands_lm import GenerateRequest, explain_generate
from tracinwe.errors import TracInWEError
from tracinwe.index import Index

runner = CliRunner()
PROMPT, COMPLETION = "The film is", " a mess, and a boring one."


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


@pytest.fixture(scope="module")
def lm_index(tmp_path_factory):
    """``(root, texts, index folder)``: the run, then its index built by the CLI in segments of 50 documents."""
    from tracinwe.data import load_dataset_source

    root = tmp_path_factory.mktemp("lmidx")
    texts = load_dataset_source("bundled:rotten-tomatoes").sample(120, seed=4).texts
    texts[7] = texts[7] + " " + texts[8] + " " + texts[9]  # longer than --max-length 48: cut as training cut it
    with open(root / "reviews.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review"])
        writer.writerows([(t,) for t in texts])
    out = invoke("train", "--task", "causal-lm", "--data", root / "reviews.csv", "--text-column", "review",
                 "--out", root / "run", "--epochs", 1, "--max-length", 48, "--batch-size", 16, "--checkpoints", 2, "--json")
    assert out.exit_code == 0, out.output
    out = invoke("index", "build", "--run-dir", root / "run", "--out", root / "idx", "--chunk-size", 50, "--json")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["task"] == "causal-lm" and summary["examples"] == 120 and summary["segments"] == 3
    assert summary["label_names"] == [] and summary["checkpoints"] == 2
    return root, texts, root / "idx"


def generate_output(capsys, json_out: bool = True, **kwargs):
    """What `explain_generate` prints for ``kwargs`` (parsed when ``json_out``)."""
    request = dict(prompt=PROMPT, folders=[], run_dir=None, data=None, columns=(None, None, None), completion=COMPLETION,
                   max_new_tokens=8, k=4, words=3, html=None)
    capsys.readouterr()
    explain_generate(GenerateRequest(**{**request, **kwargs}), json_out=json_out)
    out = capsys.readouterr().out
    return json.loads(out) if json_out else out


def test_index_answers_generate_with_the_same_proponents_and_opponents(lm_index, capsys, tmp_path):
    root, texts, idx = lm_index
    index = Index.open(idx)
    assert index.is_causal_lm and len(index) == 120 and index.ids() == [str(i) for i in range(120)]
    assert index.texts()[7] != texts[7] and texts[7].startswith(index.texts()[7])  # cut at 48 tokens, like training
    out = invoke("explain", "--generate", PROMPT, "--completion", COMPLETION, "--run-dir", root / "run", "-k", 4, "--json")
    assert out.exit_code == 0, out.output
    brute = json.loads(out.stdout)
    page = tmp_path / "gen.html"
    fast = generate_output(capsys, index=idx, html=page)
    through_cli = invoke("explain", "--generate", PROMPT, "--completion", COMPLETION, "--index", idx, "-k", 4, "--json")
    assert through_cli.exit_code == 0, through_cli.output
    via = json.loads(through_cli.stdout)
    assert [(n["row"], n["score"]) for n in via["proponents"] + via["opponents"]] == \
        [(n["row"], n["score"]) for n in fast["proponents"] + fast["opponents"]]
    both = invoke("explain", "--generate", PROMPT, "--index", idx, "--run-dir", root / "run")
    assert both.exit_code == 2 and "drop --run-dir" in both.output and len(both.output.strip().splitlines()) == 1
    assert fast["n_train"] == brute["n_train"] == 120 and fast["completion"] == COMPLETION
    scale = max(abs(n["score"]) for n in brute["proponents"] + brute["opponents"])
    for key in ("proponents", "opponents"):
        assert [n["row"] for n in fast[key]] == [n["row"] for n in brute[key]]
        assert [n["id"] for n in fast[key]] == [n["id"] for n in brute[key]]
        np.testing.assert_allclose([n["score"] for n in fast[key]], [n["score"] for n in brute[key]], rtol=0,
                                   atol=1e-5 * scale)
        for a, b in zip(fast[key], brute[key]):  # the same documents split the same way by completion token
            assert a["text"] == b["text"]
            np.testing.assert_allclose(a["token_scores"], b["token_scores"], rtol=0, atol=1e-5 * scale)
    neighbours = {n["row"] for n in fast["proponents"] + fast["opponents"]}
    assert [t["token_id"] for t in fast["tokens"]] == [t["token_id"] for t in brute["tokens"]]
    for t in fast["tokens"]:  # each token's supporters come from the returned neighbours, best first
        scores = [s["score"] for s in t["supporters"]]
        assert {s["row"] for s in t["supporters"]} <= neighbours and scores == sorted(scores, reverse=True)
    assert f'data-row="{fast["proponents"][0]["row"]}"' in page.read_text()
    printed = generate_output(capsys, json_out=False, index=idx)  # the tables, as without the index
    assert "proponents of the completion" in printed and "opponents of the completion" in printed


def test_build_from_checkpoint_folders_and_data_holds_the_same_documents(lm_index, tmp_path):
    root, _, idx = lm_index
    run = Index.open(idx)
    folders = sorted((root / "run").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    args = [a for f in folders for a in ("--checkpoint", f)]
    out = invoke("index", "build", *args, "--data", root / "reviews.csv", "--text-column", "review",
                 "--max-length", 48, "--out", tmp_path / "idx", "--json")
    assert out.exit_code == 0, out.output
    built = Index.open(tmp_path / "idx")
    assert built.is_causal_lm and built.texts() == run.texts() and built.ids() == run.ids()
    assert built.tracin.learning_rates == run.tracin.learning_rates


def test_other_tasks_are_one_line_errors(lm_index, tokenizer, capsys, tmp_path):
    from tracinwe.models.checkpoints import write_checkpoint_info

    root, _, idx = lm_index
    run = tmp_path / "clf-run"  # a classifier index built from saved checkpoints
    folder = run / "checkpoint-1"
    tiny_bert(0, 2).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_checkpoint_info(folder, 0.1, step=1)
    with open(tmp_path / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(TEXTS, [y % 2 for y in LABELS])])
    out = invoke("index", "build", "--checkpoint", folder, "--data", tmp_path / "train.csv", "--out", tmp_path / "clf",
                 "--max-length", 32)
    assert out.exit_code == 0, out.output
    with pytest.raises(TracInWEError) as err:
        generate_output(capsys, index=tmp_path / "clf")
    assert "classification model" in str(err.value) and "\n" not in str(err.value)

    for args in (["query", idx, "a gorgeous film"],  # an LM index on the classifier query path
                 ["index", "build", "--run-dir", root / "run", "--out", tmp_path / "x", "--label-column", "label"]):
        out = invoke(*args)
        assert out.exit_code != 0 and "Traceback" not in out.output
        assert len(out.output.strip().splitlines()) == 1, out.output
    assert "causal language model index" in invoke("query", idx, "a gorgeous film").output
