"""`tracinwe train --task causal-lm` and `tracinwe explain --generate` end to end on real review snippets."""

from __future__ import annotations

import csv
import json
from html import escape

import numpy as np
import pytest
from typer.testing import CliRunner

from tracinwe.cli.app import app
from tracinwe.models.checkpoints import CHECKPOINT_INFO_FILE

HOSTILE = "[/red] [link=http://x]y[/link] \x1b[31mred\x1b[0m </script><b>bold</b> movie"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


def write_documents(path, rows, header=("review",)) -> str:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A gpt2-tiny decoder trained from scratch by the CLI on 300 real Rotten Tomatoes snippets (1 epoch)."""
    from tracinwe.data import load_dataset_source

    root = tmp_path_factory.mktemp("lmcli")
    texts = load_dataset_source("bundled:rotten-tomatoes").sample(300, seed=3).texts
    data = write_documents(root / "reviews.csv", [(t,) for t in texts])
    out = invoke("train", "--task", "causal-lm", "--data", data, "--text-column", "review", "--out", root / "run",
                 "--epochs", 1, "--max-length", 48, "--batch-size", 16, "--json")
    assert out.exit_code == 0, out.output
    return root, texts, json.loads(out.stdout)


def test_train_causal_lm_saves_checkpoints_the_facade_loads(lm_run):
    from tracinwe import TracInWE

    root, texts, summary = lm_run
    assert summary["task"] == "causal-lm" and summary["model"] == "gpt2-tiny" and summary["n_train"] == 300
    assert len(summary["checkpoints"]) == 3 and summary["learning_rates"] == [3e-3] * 3
    for folder in summary["checkpoints"]:
        assert json.loads((root / "run" / folder.rsplit("/", 1)[1] / CHECKPOINT_INFO_FILE).read_text())["learning_rate"] == 3e-3
    run = json.loads((root / "run" / "tracinwe_run.json").read_text())
    assert run["train_ids"] == [str(i) for i in range(300)] and run["columns"] == {"text_column": "review"}
    tw = TracInWE.from_checkpoints(summary["checkpoints"], max_length=128)
    assert tw.is_causal_lm and tw.learning_rates == [3e-3] * 3
    assert np.isfinite(summary["final_loss"]) and summary["final_loss"] < np.log(2000)  # below a uniform guess


def test_train_fine_tunes_a_decoder_folder_on_bundled_text(lm_run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    root, _, summary = lm_run
    base = summary["checkpoints"][-1]
    out = invoke("train", "--task", "causal-lm", "--data", "bundled:rotten-tomatoes", "--n-train", 200, "--model", base,
                 "--out", tmp_path / "ft", "--epochs", 1, "--lr", 1e-3, "--checkpoints", 2, "--holdout", 0.1,
                 "--max-length", 48, "--json")
    assert out.exit_code == 0, out.output
    tuned = json.loads(out.stdout)
    assert tuned["n_train"] == 200 and tuned["learning_rates"] == [1e-3, 1e-3] and tuned["model"] == base
    assert tuned["n_heldout_scored"] > 0 and 0 < tuned["heldout_loss"] < np.log(2000)
    before = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    after = AutoModelForCausalLM.from_pretrained(tuned["checkpoints"][-1]).get_input_embeddings().weight
    assert before.shape == after.shape and not torch.equal(before, after)  # the base's vocabulary, trained further


def test_explain_generate_json_splits_each_score_by_token_and_matches_the_library(lm_run, tmp_path):
    from tracinwe import TracInWE

    root, texts, summary = lm_run
    prompt, completion = "The film is", " a mess, and a boring one."
    page = tmp_path / "gen.html"
    out = invoke("explain", "--generate", prompt, "--completion", completion, "--run-dir", root / "run", "-k", 3,
                 "--json", "--html", page)
    assert out.exit_code == 0, out.output
    view = json.loads(out.stdout)
    assert view["completion"] == completion and view["generated"] is False and view["n_train"] == 300
    tw = TracInWE.from_checkpoints(summary["checkpoints"], max_length=128)
    expected = tw.scores(texts, None, [{"prompt": prompt, "completion": completion}], None)[0]
    scale = float(np.abs(expected).max())
    assert [n["row"] for n in view["proponents"]] == np.argsort(-expected)[:3].tolist()
    assert [n["row"] for n in view["opponents"]] == np.argsort(expected)[:3].tolist()
    for n in view["proponents"] + view["opponents"]:
        assert n["id"] == str(n["row"]) and n["text"] == texts[n["row"]]
        assert n["score"] == pytest.approx(expected[n["row"]], rel=1e-5, abs=1e-6 * scale)
        assert len(n["token_scores"]) == len(view["tokens"])
        assert sum(n["token_scores"]) == pytest.approx(n["score"], rel=1e-4, abs=1e-6 * scale)  # tokens sum to the score
    ids, targets = tw.final.token_ids({"prompt": prompt, "completion": completion})
    assert [t["token_id"] for t in view["tokens"]] == [i for i, m in zip(ids, targets) if m]
    assert "".join(t["text"] for t in view["tokens"]) == completion
    for t in view["tokens"]:
        scores = [s["score"] for s in t["supporters"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    html = page.read_text()
    for t in view["tokens"]:  # every completion token is a hoverable span with a panel of its supporters
        assert f'>{escape(t["text"])}</span>' in html
    assert html.count('class="gtok"') == len(view["tokens"]) == html.count('class="tokpanel"')
    top = view["proponents"][0]
    assert f'data-row="{top["row"]}"' in html and escape(top["segments"][0]["text"]) in html
    assert "<script src" not in html and "http" not in html.split("<footer>")[0].replace("http://x", "")


def test_explain_generate_greedy_from_checkpoint_folders_prints_hostile_documents_literally(lm_run, tmp_path):
    root, texts, summary = lm_run
    docs = write_documents(tmp_path / "hostile.csv", [(HOSTILE,), (texts[0],), (texts[1],)], header=("text",))
    page = tmp_path / "hostile.html"
    args = ["explain", "--generate", "[/red] \x1b[31m The film", "--max-new-tokens", 3, "-k", 3, "--data", docs,
            "--html", page]
    for folder in summary["checkpoints"]:
        args += ["--checkpoints", folder]
    out = invoke(*args)
    assert out.exit_code == 0, out.output
    assert "[/red] [link=http://x]y[/link]" in out.output  # markup printed as written
    assert "\x1b" not in out.output and "\\x1b[31mred\\x1b[0m" in out.output  # escapes shown, never sent
    assert "generated by the final checkpoint" in out.output
    html = page.read_text()
    assert "<b>bold</b>" not in html and "script&gt;&lt;b&gt;bold" in html  # escaped in the page
    assert html.count("</script>") == 2  # the data block and the script: the document's tag did not close either
    view = json.loads(html.split('id="tracinwe-data">', 1)[1].split("</script>", 1)[0])
    assert view["generated"] is True and view["completion"].strip()
    assert sorted(n["row"] for n in view["proponents"]) == [0, 1, 2] and view["proponents"][0]["score"] > 0


def test_lm_cli_errors_are_one_line(lm_run, tmp_path, tokenizer):
    from conftest import tiny_bert
    from tracinwe.models.checkpoints import write_checkpoint_info

    root, texts, _ = lm_run
    classifier = tmp_path / "clf" / "checkpoint-1"
    tiny_bert(0, 2).save_pretrained(classifier)
    tokenizer.save_pretrained(classifier)
    write_checkpoint_info(classifier, 0.1, step=1)
    empty_row = write_documents(tmp_path / "empty.csv", [(texts[0],), ("  ",), (texts[1],)], header=("text",))
    cases = [
        (["explain", "--generate", "The film", "--checkpoints", classifier, "--data", empty_row], "not a causal language model"),
        (["explain", "--generate", "", "--run-dir", root / "run"], "--generate is an empty prompt"),
        (["explain", "--generate", "The", "--index", tmp_path / "idx"], "is missing: rebuild the index"),
        (["explain", "a text", "--run-dir", root / "run"], "is a causal language model run: explain it with --generate"),
        (["train", "--task", "causal-lm", "--data", root / "reviews.csv", "--out", tmp_path / "a"], "column 'text' not found"),
        (["train", "--task", "causal-lm", "--data", empty_row, "--out", tmp_path / "b"],
         "row 2 (line 3) of empty.csv: the text is empty"),
        (["train", "--task", "causal-lm", "--data", root / "reviews.csv", "--prompt-column", "review", "--out", tmp_path / "c"],
         "pass both --prompt-column and --completion-column"),
        (["train", "--task", "causal-lm", "--data", "bundled:rotten-tomatoes", "--model", classifier, "--out", tmp_path / "d"],
         "not a decoder-only language model"),
        (["train", "--task", "lm", "--data", empty_row, "--out", tmp_path / "e"], "use classification or causal-lm"),
    ]
    for args, needle in cases:
        out = invoke(*args)
        assert out.exit_code == 2, (args, out.output)
        assert needle in out.output and len(out.output.strip().splitlines()) == 1, (args, out.output)


def test_explain_generate_cuts_long_documents_where_training_cut_them(lm_run, tmp_path):
    root, texts, summary = lm_run
    long = " ".join(texts[:40])  # far over the model's 128 positions
    docs = write_documents(tmp_path / "long.csv", [(long,), (texts[0],)], header=("text",))
    out = invoke("explain", "--generate", "The film is", "--completion", " dull.", "--checkpoints", root / "run",
                 "--data", docs, "-k", 2, "--json")
    assert out.exit_code == 0, out.output
    assert "1 training documents are longer than 48 tokens" in out.stderr  # the run's --max-length
    shown = {n["row"]: n["text"] for n in json.loads(out.stdout)["proponents"]}
    assert shown[1] == texts[0] and long.startswith(shown[0]) and 100 < len(shown[0]) < len(long)
