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
    client = TestClient(create_app(index), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    return client, index, train, held


def test_page_and_health(served):
    client, index, train, _ = served
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/*CSS*/" not in page.text and "--pos: #2166ac" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "") and "https://" not in page.text  # no CDN
    health = client.get("/api/health").json()
    assert health == {"status": "ok", "examples": len(train), "label_names": train.label_names, "checkpoints": 3,
                      "max_length": 48}


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


def test_keep_loaded_holds_every_checkpoint_and_changes_no_score(served):
    """`TracInWE.keep_loaded` (what the explorer calls): each folder loaded once and kept, the same scores."""
    import torch

    from tracinwe.tracin import TracInWE

    _, index, train, held = served
    assert all(c.classifier is not None for c in index.tracin.checkpoints)  # create_app(preload=True) kept them
    tw = TracInWE.from_checkpoints([c.path for c in index.tracin.checkpoints], max_length=48)
    assert all(c.classifier is None for c in tw.checkpoints)  # folders: loaded one at a time by default
    before = tw.scores(train.texts[:12], train.labels[:12], held.texts[:2])
    tw.keep_loaded()
    kept = [c.classifier for c in tw.checkpoints]
    assert all(k is not None for k in kept) and len({id(k) for k in kept}) == 3
    assert all(tw.classifier(c) is kept[c] for c in range(3))  # never reloaded
    first, last = (k.embedding.weight for k in (kept[0], kept[2]))
    assert not torch.equal(first, last)  # each checkpoint its own folder's weights
    np.testing.assert_array_equal(tw.scores(train.texts[:12], train.labels[:12], held.texts[:2]), before)


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


# -- hardening: Host check, body limit, field limits, no third-party scripts ---------------------


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("", 400),
    ("127.0.0.1:8000", 200), ("localhost", 200), ("LOCALHOST:1234", 200), ("[::1]:8000", 200),
])
def test_only_local_host_names_are_served(served, host, status):
    client = served[0]
    answer = client.get("/api/health", headers={"host": host})
    assert answer.status_code == status
    if status == 400:
        assert "is not served here" in answer.json()["detail"]


def test_a_host_passed_to_serve_is_trusted(served):
    from fastapi.testclient import TestClient

    from tracinwe.web import create_app

    app = create_app(served[1], preload=False, hosts=["explorer.lan"])
    client = TestClient(app, base_url="http://explorer.lan:8000")
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/health", headers={"host": "other.lan"}).status_code == 400


@pytest.mark.parametrize("body", [
    {"text": "ok", "label": "x" * 10_000},
    {"text": "ok", "label": 10 ** 30},
    {"text": "ok", "k": 10 ** 6},
    {"text": "ok", "words": 10 ** 6},
])
def test_every_field_has_a_limit(served, body):
    answer = served[0].post("/api/explain", json=body)
    assert answer.status_code == 422, answer.text
    assert len(answer.json()["detail"]) < 300  # the oversized value is not echoed back


def test_a_body_over_64_kb_is_refused_by_its_length(served):
    client = served[0]
    answer = client.post("/api/explain", content=b'{"text": "' + b"x" * 70_000 + b'"}',
                         headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "65536 bytes" in answer.json()["detail"]
    assert client.get("/api/health").status_code == 200


def test_no_page_loads_a_script_from_another_origin(served):
    import re

    client = served[0]
    external = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.IGNORECASE)
    pages = [r.path for r in client.app.routes if "GET" in getattr(r, "methods", ()) and "{" not in r.path]
    assert "/" in pages
    for path in pages + ["/docs", "/redoc", "/api/docs", "/api/redoc"]:
        answer = client.get(path)
        assert not external.search(answer.text), path
    assert client.get("/api/docs").status_code == 404 and client.get("/docs").status_code == 404


@pytest.fixture()
def real_server(served):
    """The explorer of ``served`` behind a real uvicorn server on 127.0.0.1 (in a thread)."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(served[0].app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):  # 20 s at most
        if server.started:
            break
        time.sleep(0.1)
    assert server.started, "uvicorn did not start"
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


def _response_status(conn, timeout: float = 30.0) -> int:
    """The status code of the HTTP response on ``conn`` (reads the head only)."""
    conn.settimeout(timeout)
    head = b""
    while b"\r\n" not in head and len(head) < 4096:
        chunk = conn.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1])


def test_a_300_mb_post_is_refused_without_being_read(real_server):
    """Declared (Content-Length) or streamed (chunked), 300 MB get 413 and the server grows < 10 MB."""
    import select
    import socket
    import time
    import tracemalloc

    port, total = real_server, 300 * 1024 * 1024
    head = f"POST /api/explain HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:  # declared: nothing sent after the head
            conn.sendall(f"{head}Content-Length: {total}\r\n\r\n".encode())
            assert _response_status(conn) == 413
        data = b"x" * 65536
        frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        sent, deadline = 0, time.monotonic() + 120
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:  # streamed: until the server answers
            conn.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\na\r\n".encode() + b'{"text": "\r\n')
            conn.settimeout(2)
            while sent < total and time.monotonic() < deadline:
                if select.select([conn], [], [], 0)[0]:
                    break
                try:
                    conn.sendall(frame)
                except (TimeoutError, BrokenPipeError, ConnectionResetError):
                    break  # the server stopped reading
                sent += len(data)
            assert _response_status(conn) == 413
        grown = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert sent < 16 * 1024 * 1024, f"{sent} bytes went in before the answer"
    assert grown < 10 * 1024 * 1024, f"the server allocated {grown / 2**20:.0f} MB"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:  # and it still serves
        conn.sendall(f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        assert _response_status(conn) == 200
