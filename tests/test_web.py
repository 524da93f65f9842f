"""The explorer's HTTP API: exact answers, 4xx on bad input, and a server that survives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tracinwe.index import Index


def build_small_index(folder: Path, n_train: int = 240, seed: int = 0) -> tuple[Index, object, object]:
    """A tiny BERT fine-tuned on real Rotten Tomatoes reviews (3 checkpoints on disk) and its index.

    Returns ``(index, train set, held-out set)``. About 15 s on 2 cores.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tracinwe.data import load_dataset_source
    from tracinwe.models.pretrained import minilm_l6_path
    from tracinwe.tracin import TracInWE
    from tracinwe.training import TrainConfig, train_classifier

    data = load_dataset_source("bundled:rotten-tomatoes")
    train_pool, held_pool = data.split(0.2, seed=seed)
    train, held = train_pool.sample(n_train, seed=seed), held_pool.sample(40, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_l6_path())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label=dict(enumerate(train.label_names)), label2id={n: i for i, n in enumerate(train.label_names)})
    model = BertForSequenceClassification(config)
    run = train_classifier(model, tokenizer, train.texts, train.labels, folder / "run",
                           TrainConfig(epochs=3, learning_rate=0.05, optimizer="sgd", batch_size=16, num_checkpoints=3,
                                       max_length=48, seed=seed), progress=False)
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=48)
    Index.build_from_dataset(folder / "index", tw, train, progress=False)
    return Index.open(folder / "index"), train, held


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from fastapi.testclient import TestClient

    from tracinwe.web import create_app

    index, train, held = build_small_index(tmp_path_factory.mktemp("web"))
    client = TestClient(create_app(index), raise_server_exceptions=False)
    return client, index, train, held


def test_page_and_health(served):
    client, index, train, _ = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/*CSS*/" not in page.text and "--pos: #2166ac" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text  # no CDN
    health = client.get("/api/health").json()
    assert health == {"status": "ok", "examples": len(train), "label_names": train.label_names, "checkpoints": 3, "max_length": 48}


def test_explain_equals_index_query(served):
    client, index, _, held = served
    text = held.texts[0]
    answer = client.post("/api/explain", json={"text": text, "k": 4, "words": 3})
    assert answer.status_code == 200, answer.text
    v = answer.json()
    (expected,) = index.query([text], k=4, words=100_000)
    full = index.scores([text])[0]
    assert v["prediction"] == expected.prediction and v["gold"] is False and v["label"] == expected.prediction
    assert v["probabilities"] == pytest.approx(expected.probabilities, abs=1e-12)
    for key in ("proponents", "opponents"):
        assert [n["row"] for n in v[key]] == [n.row for n in getattr(expected, key)]
        assert [n["score"] for n in v[key]] == [n.score for n in getattr(expected, key)]
        for n in v[key]:
            assert n["score"] == pytest.approx(full[n["row"]], rel=1e-5, abs=1e-12)  # exact, = the full matrix
            assert "".join(s["text"] for s in n["segments"]) == n["text"]
            assert len(n["words"]) <= 3
    assert v["proponents"][0]["score"] == pytest.approx(full.max(), rel=1e-5)
    assert v["opponents"][0]["score"] == pytest.approx(full.min(), rel=1e-5)


def test_explain_a_given_label(served):
    client, index, train, held = served
    name = train.label_names[1 - held.labels[1]]
    v = client.post("/api/explain", json={"text": held.texts[1], "label": name, "k": 2}).json()
    (expected,) = index.query([held.texts[1]], [train.label_names.index(name)], k=2)
    assert v["gold"] is True and v["label_name"] == name
    assert [n["score"] for n in v["proponents"]] == [n.score for n in expected.proponents]


def test_suspicious(served):
    client, index, _, _ = served
    rows = client.get("/api/suspicious", params={"k": 5}).json()
    values = index.self_influence()
    assert [r["row"] for r in rows] == list(np.argsort(-values, kind="stable")[:5])
    assert [r["self_influence"] for r in rows] == pytest.approx(sorted(values, reverse=True)[:5])


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "needle"),
    [
        ("post", "/api/explain", {"text": "   "}, 422, "text is empty"),
        ("post", "/api/explain", {}, 422, "text: Field required"),
        ("post", "/api/explain", {"text": "ok", "k": 0}, 422, "k:"),
        ("post", "/api/explain", {"text": "ok", "k": "many"}, 422, "k:"),
        ("post", "/api/explain", {"text": "x" * 6000}, 422, "at most 5000"),
        ("post", "/api/explain", {"text": "ok", "label": "sideways"}, 400, "not one of"),
        ("post", "/api/explain", {"text": "ok", "label": 7}, 400, "not one of"),
        ("post", "/api/explain", "not json", 422, "JSON"),
        ("get", "/api/suspicious?k=-1", None, 422, "k:"),
        ("get", "/api/nowhere", None, 404, "Not Found"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(served, method, url, body, status, needle):
    client = served[0]
    if method == "post" and isinstance(body, str):
        answer = client.post(url, content=body, headers={"content-type": "application/json"})
    elif method == "post":
        answer = client.post(url, json=body)
    else:
        answer = client.get(url)
    assert answer.status_code == status
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and needle.lower() in detail.lower()
    assert client.get("/api/health").status_code == 200  # still serving


def test_an_internal_failure_is_a_500_and_the_server_goes_on(served, monkeypatch):
    client, index, _, held = served

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(index, "query", broken)
    answer = client.post("/api/explain", json={"text": "fine"})
    assert answer.status_code == 500 and "disk on fire" in answer.json()["detail"]
    monkeypatch.undo()
    assert client.post("/api/explain", json={"text": held.texts[0], "k": 1}).status_code == 200
