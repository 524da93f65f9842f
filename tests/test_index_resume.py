"""A build killed with SIGKILL resumes where it stopped and ends with the same index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.index import Index

TESTS = Path(__file__).parent
TRAIN = [f"{t} ({i})" for i in range(5) for t in TEXTS]
LABELS = [i % 2 for i in range(len(TRAIN))]
CHUNK = 3

CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_bert
from transformers import AutoTokenizer
from tracinwe import TracInWE
from tracinwe.index import Index
from tracinwe.models.pretrained import minilm_l6_path
spec = json.load(open({spec!r}))
tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=AutoTokenizer.from_pretrained(minilm_l6_path()),
              top_k=10, max_length=64)
Index.build(spec["path"], tw, spec["texts"], spec["labels"], chunk_size={chunk}, progress=False)
"""


def make_tw(tokenizer):
    return TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=10, max_length=64)


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_index(tokenizer, tmp_path):
    killed = tmp_path / "killed"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"path": str(killed), "texts": TRAIN, "labels": LABELS}))
    script = CHILD.format(tests=str(TESTS), spec=str(spec), chunk=CHUNK)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (killed / "segments" / "seg-000002").exists():
        if child.poll() is not None:
            pytest.fail(f"the build ended before it could be killed: {child.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            child.kill()
            pytest.fail("the build did not start within 240 s")
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not (killed / "manifest.json").exists() and (killed / "build-plan.json").exists()
    committed = sorted(p.name for p in (killed / "segments").iterdir() if p.name.startswith("seg-"))
    assert 3 <= len(committed) < len(TRAIN) // CHUNK

    tw = make_tw(tokenizer)
    resumed = Index.build(killed, tw, TRAIN, LABELS, chunk_size=CHUNK, progress=False)
    fresh = Index.build(tmp_path / "fresh", tw, TRAIN, LABELS, chunk_size=CHUNK, progress=False)
    assert resumed.manifest == fresh.manifest  # every file's sha256, the settings, the fingerprint
    assert not (killed / "build-plan.json").exists()
    assert sorted(os.listdir(killed / "segments")) == sorted(os.listdir(tmp_path / "fresh" / "segments"))
    Index.open(killed, tracin=tw, verify="full")


def test_failed_write_then_resume_keeps_the_projection_basis(tokenizer, tmp_path, monkeypatch):
    """A write failing in the writer thread stops the build; the rerun reuses the stored basis and ends identical."""
    import tracinwe.index.segments as build  # where SegmentBuilder.write finds write_segment

    tw = make_tw(tokenizer)
    original, calls = build.write_segment, []

    def failing(root, number, *args, **kwargs):
        calls.append(number)
        if number == 2:
            raise OSError("disk full (simulated)")
        return original(root, number, *args, **kwargs)

    monkeypatch.setattr(build, "write_segment", failing)
    broken = tmp_path / "broken"
    with pytest.raises(OSError, match="disk full"):
        Index.build(broken, tw, TRAIN, LABELS, chunk_size=CHUNK, projection_dim=6, progress=False)
    assert not (broken / "manifest.json").exists() and (broken / "projection" / "rows.npy").exists()
    basis = (broken / "projection" / "rows.npy").read_bytes()
    monkeypatch.setattr(build, "write_segment", original)
    resumed = Index.build(broken, tw, TRAIN, LABELS, chunk_size=CHUNK, projection_dim=6, progress=False)
    assert (broken / "projection" / "rows.npy").read_bytes() == basis
    fresh = Index.build(tmp_path / "fresh", tw, TRAIN, LABELS, chunk_size=CHUNK, projection_dim=6, progress=False)
    assert resumed.manifest == fresh.manifest
