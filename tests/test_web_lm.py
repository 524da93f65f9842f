"""`tracinwe serve` on a causal-LM index: ``POST /api/generate`` equals `explain --generate --index`, per-token
scores sum to each neighbour's score, hostile training text comes back (and renders) literally, bad input and the
other task's endpoint are one-line errors.

A gpt2-tiny decoder trained from scratch by the CLI on 120 real Rotten Tomatoes snippets (1 epoch) plus one hostile
document stated twice, and its index, built once for the module (about 10 s on 2 cores).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tracinwe.cli.app import app
from tracinwe.cli.commands_lm import GenerateRequest, explain_generate
from tracinwe.index import Index

HOSTILE = "<script>alert(1)</script> [/red] [link=http://x]y[/link] \x1b[31mred\x1b[0m <b>bold</b> &amp; a movie"
HOSTILE_PROMPT = "<script>alert(1)</script> [/red]"
PROMPT, COMPLETION = "The film is", " a mess, and a boring one."
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


@pytest.fixture(scope="module")
def lm_served(tmp_path_factory):
    """``(client, index, index folder)``: the explorer (checkpoints kept loaded) over an LM index the CLI built."""
    from fastapi.testclient import TestClient

    from tracinwe.data import load_dataset_source
    from tracinwe.web import create_app

    root = tmp_path_factory.mktemp("weblm")
    texts = load_dataset_source("bundled:rotten-tomatoes").sample(120, seed=5).texts
    texts[10:10] = [HOSTILE]
    texts[60:60] = [HOSTILE]
    with open(root / "reviews.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review"])
        writer.writerows([(t,) for t in texts])
    out = invoke("train", "--task", "causal-lm", "--data", root / "reviews.csv", "--text-column", "review",
                 "--out", root / "run", "--epochs", 1, "--max-length", 48, "--batch-size", 16, "--checkpoints", 2, "--json")
    assert out.exit_code == 0, out.output
    out = invoke("index", "build", "--run-dir", root / "run", "--out", root / "idx", "--json")
    assert out.exit_code == 0, out.output
    index = Index.open(root / "idx")
    client = TestClient(create_app(index), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    return client, index, root / "idx"


def cli_view(capsys, idx: Path, **kwargs) -> dict:
    """What `tracinwe explain --generate --index IDX --json` prints (a freshly opened index)."""
    request = dict(prompt=PROMPT, folders=[], run_dir=None, data=None, columns=(None, None, None), completion=None,
                   max_new_tokens=8, k=4, words=5, html=None, index=idx)
    capsys.readouterr()
    explain_generate(GenerateRequest(**{**request, **kwargs}), json_out=True)
    return json.loads(capsys.readouterr().out)


def generate(client, **body) -> dict:
    answer = client.post("/api/generate", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_page_health_and_kept_checkpoints(lm_served):
    client, index, _ = lm_served
    page = client.get("/")
    assert page.status_code == 200 and "/api/generate" in page.text and 'id="prompt"' in page.text
    assert "/*CSS*/" not in page.text and "/*COMMON_JS*/" not in page.text and "function segmentsNode" in page.text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):  # data only via textContent
        assert sink not in page.text, sink
    assert not re.search(r"<script[^>]*\bsrc\s*=", page.text, re.IGNORECASE)  # nothing loaded from elsewhere
    health = client.get("/api/health").json()
    assert health["task"] == "causal-lm" and health["examples"] == len(index) == 122 and health["checkpoints"] == 2
    assert all(c.classifier is not None for c in index.tracin.checkpoints)  # create_app kept every checkpoint loaded


@pytest.mark.parametrize("completion", [COMPLETION, None])
def test_generate_equals_explain_generate_on_the_same_index(lm_served, capsys, completion):
    client, index, idx = lm_served
    v = generate(client, prompt=PROMPT, completion=completion, max_new_tokens=6, k=4, words=5)
    cli = cli_view(capsys, idx, completion=completion, max_new_tokens=6)
    assert v["completion"] == cli["completion"] and v["generated"] is (completion is None) is cli["generated"]
    assert v["n_train"] == cli["n_train"] == len(index) and v["token_supporters_from"] == "index neighbours"
    scale = max(abs(n["score"]) for n in cli["proponents"] + cli["opponents"])
    for key in ("proponents", "opponents"):
        assert len(v[key]) == 4
        assert [(n["row"], n["id"], n["text"]) for n in v[key]] == [(n["row"], n["id"], n["text"]) for n in cli[key]]
        np.testing.assert_allclose([n["score"] for n in v[key]], [n["score"] for n in cli[key]], rtol=0, atol=1e-9 * scale)
    assert [t["token_id"] for t in v["tokens"]] == [t["token_id"] for t in cli["tokens"]]
    for a, b in zip(v["tokens"], cli["tokens"]):
        assert [s["row"] for s in a["supporters"]] == [s["row"] for s in b["supporters"]]
        np.testing.assert_allclose([s["score"] for s in a["supporters"]], [s["score"] for s in b["supporters"]],
                                   rtol=0, atol=1e-9 * scale)
    if completion is None:
        return
    # and the top of the full score row over every indexed document (`Index.scores` equals `tw.scores`: test_lm_index)
    full = index.scores([{"prompt": PROMPT, "completion": v["completion"]}])[0]
    order = np.argsort(-full, kind="stable")
    assert [n["row"] for n in v["proponents"]] == order[:4].tolist()
    assert [n["row"] for n in v["opponents"]] == order[::-1][:4].tolist()
    np.testing.assert_allclose([n["score"] for n in v["proponents"]], full[order[:4]], rtol=1e-5, atol=1e-7 * scale)


def test_per_token_scores_sum_to_each_neighbours_score(lm_served):
    client, _, _ = lm_served
    v = generate(client, prompt=PROMPT, completion=COMPLETION, k=5, words=50)
    neighbours = {n["row"]: n for n in v["proponents"] + v["opponents"]}
    scale = max(abs(n["score"]) for n in neighbours.values())
    assert len(v["tokens"]) >= 5 and v["scale"] > 0 and v["seconds"] > 0
    for n in neighbours.values():
        assert len(n["token_scores"]) == len(v["tokens"])
        assert sum(n["token_scores"]) == pytest.approx(n["score"], rel=1e-6, abs=1e-9 * scale)
        if len(n["words"]) < 50:  # every shared token listed: the token contributions sum to the score too
            assert sum(w["contribution"] for w in n["words"]) == pytest.approx(n["score"], rel=1e-6, abs=1e-9 * scale)
        assert "".join(s["text"] for s in n["segments"]) == n["text"]
    for t, token in enumerate(v["tokens"]):  # a token's supporters: the neighbours' shares of that token, best first
        scores = [s["score"] for s in token["supporters"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
        for s in token["supporters"]:
            assert s["score"] == pytest.approx(neighbours[s["row"]]["token_scores"][t], rel=1e-6, abs=1e-9 * scale)


def test_hostile_text_comes_back_literally(lm_served):
    client, index, _ = lm_served
    v = generate(client, prompt=HOSTILE_PROMPT, completion=HOSTILE[len(HOSTILE_PROMPT):], k=3)
    top = v["proponents"][0]
    assert index.texts([top["row"]]) == [HOSTILE] and top["text"] == HOSTILE  # its own document supports it most
    assert "".join(s["text"] for s in top["segments"]) == HOSTILE
    assert any(s["contribution"] for s in top["segments"])  # shared tokens highlighted
    assert v["prompt"] == HOSTILE_PROMPT and v["completion"] == HOSTILE[len(HOSTILE_PROMPT):]
    assert any(s["text"] == HOSTILE for t in v["tokens"] for s in t["supporters"])


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompt": "   "}, 422, "prompt is empty"),
        ({}, 422, "prompt: Field required"),
        ({"prompt": "ok", "k": 0}, 422, "k:"),
        ({"prompt": "ok", "k": 51}, 422, "k:"),
        ({"prompt": "ok", "k": "many"}, 422, "k:"),
        ({"prompt": "ok", "max_new_tokens": 0}, 422, "max_new_tokens:"),
        ({"prompt": "ok", "max_new_tokens": 10_000}, 422, "max_new_tokens:"),
        ({"prompt": "ok", "completion": ""}, 422, "completion is empty"),
        ({"prompt": "x" * 6000}, 422, "at most 5000"),
        ({"prompt": "the film " * 70}, 400, "does not fit"),  # the model would run past its positions
        ({"prompt": "ok", "completion": " the film" * 70}, 400, "max_length"),
        ("not json", 422, "JSON"),
    ],
)
def test_bad_requests_are_one_line_errors(lm_served, body, status, needle):
    client = lm_served[0]
    if isinstance(body, str):
        answer = client.post("/api/generate", content=body, headers={"content-type": "application/json"})
    else:
        answer = client.post("/api/generate", json=body)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 400 and needle.lower() in detail.lower()
    assert client.get("/api/health").status_code == 200  # still serving


def test_the_other_tasks_endpoint_is_a_one_line_error(lm_served, tokenizer, tmp_path):
    from fastapi.testclient import TestClient

    from conftest import LABELS, TEXTS, tiny_bert
    from tracinwe.tracin import TracInWE
    from tracinwe.web import create_app

    client = lm_served[0]
    for body in ({"text": "a gorgeous film"}, {}):  # whatever the body, the task is the problem
        answer = client.post("/api/explain", json=body)
        assert answer.status_code == 400 and "/api/generate" in answer.json()["detail"]
        assert "\n" not in answer.json()["detail"]
    rows = client.get("/api/suspicious", params={"k": 3}).json()  # self-influence is the same for both tasks
    values = lm_served[1].self_influence()
    assert [r["row"] for r in rows] == np.argsort(-values, kind="stable")[:3].tolist()

    tw = TracInWE([(tiny_bert(0, 2), 0.1)], tokenizer=tokenizer, max_length=32)
    Index.build(tmp_path / "clf", tw, TEXTS, [y % 2 for y in LABELS], progress=False)
    classifier = TestClient(create_app(Index.open(tmp_path / "clf", tracin=tw), preload=False), base_url="http://127.0.0.1")
    answer = classifier.post("/api/generate", json={"prompt": "The film is"})
    detail = answer.json()["detail"]
    assert answer.status_code == 400 and "classifier index" in detail and "/api/explain" in detail and "\n" not in detail
    assert "task" not in classifier.get("/api/health").json() and "/api/explain" in classifier.get("/").text


# -- the page in a real browser, served by `tracinwe serve` -------------------------------------------------------


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium")
def test_clicking_a_token_shows_its_supporters_in_the_browser(lm_served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
    client, _, idx = lm_served
    expected = generate(client, prompt=HOSTILE_PROMPT, completion=HOSTILE[len(HOSTILE_PROMPT):], k=3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", "from tracinwe.cli.app import app; app()", "serve", str(idx),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.goto(url)
            page.fill("#prompt", HOSTILE_PROMPT)
            page.fill("#completion", HOSTILE[len(HOSTILE_PROMPT):])
            page.select_option("#k", "3")
            page.click("#go")
            page.wait_for_selector("#answer .gtok")
            tokens = page.locator("#answer .gtok")
            assert tokens.count() == len(expected["tokens"])
            assert tokens.evaluate_all("els => els.map(e => e.textContent)") == [t["text"] for t in expected["tokens"]]
            last = len(expected["tokens"]) - 1
            tokens.nth(last).click()
            panel = page.locator("#token-panel")
            assert panel.get_attribute("data-token") == str(last)
            shown = panel.locator(".neighbor").evaluate_all(
                "els => els.map(e => [Number(e.dataset.row), Number(e.dataset.score)])")
            assert shown == [[s["row"], s["score"]] for s in expected["tokens"][last]["supporters"]]
            active = page.locator("#answer .tsplit.active").evaluate_all("els => els.map(e => e.dataset.token)")
            assert active == [str(last)] * len(expected["proponents"] + expected["opponents"])  # its share in each score
            top = page.locator("#answer .col.proponents .neighbor .ntext").first
            assert top.text_content() == HOSTILE  # the markup and escapes are text, not elements
            assert page.locator("#result script, #result b, #result a").count() == 0
            assert top.locator("mark.w").count() > 0
            page.click("#load-suspicious")  # the self-influence table (shared with the classifier page)
            page.wait_for_selector("#suspicious table.susp tbody tr")
            want = client.get("/api/suspicious", params={"k": 20}).json()
            assert page.locator("#suspicious tbody tr").evaluate_all("els => els.map(e => Number(e.dataset.row))") == [
                r["row"] for r in want]
            assert page.locator("#suspicious th").all_text_contents() == ["#", "self-influence", "document", "id"]
            assert page.locator("#suspicious script, #suspicious b, #suspicious a").count() == 0
            shot = tmp_path / "explorer-lm.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("TRACINWE_SCREENSHOTS"):  # as tests/test_browser.py: keep the picture
                Path(os.environ["TRACINWE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["TRACINWE_SCREENSHOTS"]) / shot.name)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
