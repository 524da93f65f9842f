"""The report and the explorer in a real browser (Debian's chromium driven by Playwright).

CI installs ``chromium`` (apt) and the ``playwright`` Python package; the tests are
skipped, with the reason, only where /usr/bin/chromium is missing. Screenshots go
to the test's tmp_path; ``TRACINWE_SCREENSHOTS=folder`` also copies them there.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


def _keep(shot: Path) -> None:
    target = os.environ.get("TRACINWE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / shot.name)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from test_web import build_small_index

    root = tmp_path_factory.mktemp("browser")
    index, train, held = build_small_index(root)
    return root, index, train, held


def test_report_in_the_browser(browser, small, tmp_path):
    from tracinwe.report import render_report

    root, index, train, held = small
    texts, labels = held.texts[:3], held.labels[:3]
    results = index.query(texts, labels, k=3, words=100_000)
    path = render_report(results, index.suspicious(k=5), index.label_names, "Browser test", tmp_path / "report.html",
                         tokenizer=index.tracin, scores=index.scores(texts, labels), self_influence=index.self_influence())
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    page.goto(path.as_uri())
    assert page.locator("section.query").count() == 3
    for i, r in enumerate(results):
        section = page.locator(f'section.query[data-index="{i}"]')
        cards = section.locator(".neighbor.proponent")
        assert [float(s) for s in cards.evaluate_all("els => els.map(e => e.dataset.score)")] == [n.score for n in r.proponents]
        opp = section.locator(".neighbor.opponent")
        assert [float(s) for s in opp.evaluate_all("els => els.map(e => e.dataset.score)")] == [n.score for n in r.opponents]
        assert section.locator(".prediction").inner_text() == index.label_names[r.prediction]
        # the highlighted words of the top proponent are the shared words, coloured, with their value on hover
        marks = cards.first.locator(".ntext mark.w")
        specials = set(index.tracin.final.special_token_ids)
        assert marks.count() > 0 or all(w.token_id in specials for w in r.proponents[0].words)
        for title, bg, value in marks.evaluate_all(
            "els => els.map(e => [e.title, getComputedStyle(e).backgroundColor, Number(e.dataset.contribution)])"
        ):
            assert title.endswith(f"{value:+.3g}")
            assert bg.startswith("rgba(33, 102, 172" if value > 0 else "rgba(178, 24, 43")
    embedded = json.loads(page.locator("#tracinwe-data").text_content())
    assert [n["score"] for n in embedded["results"][0]["proponents"]] == [n.score for n in results[0].proponents]
    page.check("#only-wrong")
    visible = page.locator("section.query:visible").count()
    assert visible == sum(r.prediction != r.label for r in results)
    page.uncheck("#only-wrong")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    _keep(shot)
    page.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small):
    """`tracinwe serve INDEX` in a subprocess on a free localhost port."""
    root, index, train, held = small
    port = _free_port()
    code = "from tracinwe.cli.app import app; app()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", str(root / "index"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("serve did not answer /api/health within 180 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_explorer_in_the_browser(browser, small, server, tmp_path):
    root, index, train, held = small
    page = browser.new_page(viewport={"width": 1200, "height": 1300})
    page.goto(server)
    page.wait_for_selector('#label option:nth-child(3)', state="attached")  # labels came from /api/health
    # a bad request is answered with a message, and the page (and server) go on
    page.fill("#text", "   ")
    page.click("#go")
    page.wait_for_selector("#result .error")
    assert "text is empty" in page.inner_text("#result .error")

    text = held.texts[2]
    page.fill("#text", text)
    page.select_option("#k", "5")
    page.click("#go")
    page.wait_for_selector("#answer .neighbor.proponent")
    (expected,) = index.query([text], k=5)
    shown = page.locator("#answer .neighbor.proponent").evaluate_all(
        "els => els.map(e => [Number(e.dataset.row), Number(e.dataset.score)])")
    assert shown == [[n.row, n.score] for n in expected.proponents]
    shown = page.locator("#answer .neighbor.opponent").evaluate_all("els => els.map(e => Number(e.dataset.score))")
    assert shown == [n.score for n in expected.opponents]
    assert page.inner_text("#answer .prediction") == index.label_names[expected.prediction]
    assert page.inner_text("#answer .qtext") == text
    marks = page.locator("#answer mark.w").evaluate_all("els => els.map(e => [e.title, Number(e.dataset.contribution)])")
    for title, value in marks:
        assert title.endswith(f"{value:+.3g}")  # the JavaScript formatting matches Python's
    assert "answered in" in page.inner_text("#status")

    page.click("#load-suspicious")
    page.wait_for_selector("#suspicious table.susp tbody tr")
    rows = page.locator("#suspicious tbody tr").evaluate_all("els => els.map(e => Number(e.dataset.row))")
    assert rows == [n.row for n in index.suspicious(k=20)]
    page.locator("#answer").scroll_into_view_if_needed()
    shot = tmp_path / "explorer.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    _keep(shot)
    page.close()
