"""One writer at a time: concurrent appends land whole, in some order, and survive ``kill -9`` at any point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.index import Index, IndexBuildError

TESTS = Path(__file__).parent
BASE = [f"{t} (base {i})" for i in range(2) for t in TEXTS]
BASE_LABELS = [i % 2 for i in range(len(BASE))]
BATCH = 3  # examples per append (segments of 2: each append writes two segments)


def make_tw(tokenizer):
    return TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=10, max_length=64)


def batch(tag: str, seq: int) -> tuple[list[str], list[int], list[str]]:
    ids = [f"{tag}-{seq}-{i}" for i in range(BATCH)]
    return [f"{TEXTS[(seq + i) % len(TEXTS)]} [{e}]" for i, e in enumerate(ids)], [i % 2 for i in range(BATCH)], ids


@pytest.fixture()
def base(tokenizer, tmp_path):
    tw = make_tw(tokenizer)
    path = tmp_path / "index"
    Index.build(path, tw, BASE, BASE_LABELS, ids=[f"base-{i}" for i in range(len(BASE))], chunk_size=2, progress=False)
    return tw, path


def test_two_handles_append_the_union(base):
    tw, path = base
    first, second = Index.open(path, tracin=tw), Index.open(path, tracin=tw)
    first.append(*batch("a", 0)[:2], ids=batch("a", 0)[2])
    second.append(*batch("b", 0)[:2], ids=batch("b", 0)[2])  # its manifest is stale: it rebases onto first's
    expected = [f"base-{i}" for i in range(len(BASE))] + batch("a", 0)[2] + batch("b", 0)[2]
    assert second.ids() == expected and len(second) == len(expected)
    reopened = Index.open(path, tracin=tw, verify="full")
    assert reopened.ids() == expected and reopened.texts()[-BATCH:] == batch("b", 0)[0]
    assert [s.start for s in reopened.manifest.segments] == [0, 2, 4, 6, 8, 10, 12, 14, 15, 17]
    assert sorted(os.listdir(path / "segments")) == [s.name for s in reopened.manifest.segments]
    with pytest.raises(IndexBuildError, match="not unique"):  # the ids of the other handle's append count
        first.append(*batch("b", 0)[:2], ids=batch("b", 0)[2])
    # default ids continue after the rows on disk
    first.append(["one more text"], [0])
    assert Index.open(path, tracin=tw).ids()[-1] == str(len(expected))


def test_append_to_a_rebuilt_index_is_refused(base, tmp_path):
    tw, path = base
    stale = Index.open(path, tracin=tw)
    fresh = Index.open(path, tracin=tw)
    import shutil

    shutil.rmtree(path)
    Index.build(path, tw, BASE[::-1], BASE_LABELS[::-1], chunk_size=2, progress=False)
    fresh_ids = Index.open(path, tracin=tw).ids()
    with pytest.raises(IndexBuildError, match="index changed since you opened it: reopen it and append again"):
        stale.append(*batch("x", 0)[:2], ids=batch("x", 0)[2])
    with pytest.raises(IndexBuildError, match="index changed since you opened it"):
        fresh.append(*batch("x", 0)[:2], ids=batch("x", 0)[2])
    assert Index.open(path, tracin=tw, verify="full").ids() == fresh_ids  # the rebuilt index is untouched


ZYGOTE = """
import json, os, random, signal, sys, time
import torch
torch.set_num_threads(1)  # no thread pool before fork
sys.path.insert(0, {tests!r})
from conftest import TEXTS, tiny_bert
from transformers import AutoTokenizer
from tracinwe import TracInWE
from tracinwe.index import Index
from tracinwe.models.pretrained import minilm_l6_path
from test_index_concurrency import batch
import pyarrow.dataset, pyarrow.parquet  # imported once here, not in every forked writer (1 s each)
tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=AutoTokenizer.from_pretrained(minilm_l6_path()),
              top_k=10, max_length=64)
path, workers, kills, seed = {path!r}, {workers}, {kills}, {seed}
rng = random.Random(seed)

def start(tag):
    pid = os.fork()
    if pid:
        return pid
    try:
        index = Index.open(path, tracin=tw, verify="none")
        seq = 0
        while True:
            texts, labels, ids = batch(tag, seq)
            index.append(texts, labels, ids=ids)
            seq += 1
    finally:
        os._exit(1)

tags = ["w0", "w1", "w2", "w3"][:workers]
running = {{start(t): t for t in tags}}
deadline = time.time() + 120
while json.load(open(os.path.join(path, "manifest.json")))["num_examples"] == {base}:  # kill only once appends land
    assert time.time() < deadline, "no append landed within 120 s"
    time.sleep(0.05)
for k in range(kills):
    time.sleep(rng.uniform(0.05, 0.5))
    pid = rng.choice(sorted(running))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    tag = f"w{{workers + k}}"
    tags.append(tag)
    running[start(tag)] = tag
    del running[pid]
time.sleep(rng.uniform(0.05, 0.5))
for pid in running:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
print(json.dumps(tags))
"""


@pytest.mark.slow
def test_four_writers_killed_at_random_points(base):
    """4 processes append while ``kill -9`` hits 30 times: the index opens fully verified, holding whole appends."""
    tw, path = base
    script = ZYGOTE.format(tests=str(TESTS), path=str(path), workers=4, kills=30, seed=11, base=len(BASE))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    tags = json.loads(done.stdout.strip().splitlines()[-1])

    index = Index.open(path, tracin=tw, verify="full")
    ids, texts = index.ids(), index.texts()
    assert ids[: len(BASE)] == [f"base-{i}" for i in range(len(BASE))]
    assert len(ids) == len(index) == sum(s.num_examples for s in index.manifest.segments)
    landed: dict[str, list[int]] = {}
    for at in range(len(BASE), len(ids), BATCH):  # whole appends, each contiguous
        tag, seq = re.fullmatch(r"(w\d+)-(\d+)-0", ids[at]).groups()
        assert (texts[at : at + BATCH], ids[at : at + BATCH]) == tuple(batch(tag, int(seq))[::2])
        landed.setdefault(tag, []).append(int(seq))
    assert set(landed) <= set(tags) and landed  # the zygote waited for the first append before killing
    for tag, seqs in landed.items():  # each writer's appends land as a prefix of the ones it made, in order
        assert seqs == list(range(len(seqs))), (tag, seqs)
    # an append now cleans up what the killed writers left; only manifest segments remain
    index.append(*batch("final", 0)[:2], ids=batch("final", 0)[2])
    reopened = Index.open(path, tracin=tw, verify="full")
    assert sorted(os.listdir(path / "segments")) == sorted(s.name for s in reopened.manifest.segments)
    assert reopened.ids()[-BATCH:] == batch("final", 0)[2]
