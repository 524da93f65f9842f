"""Nothing lost, nothing trusted unchecked: durable commits, lazy checksums, manifest names, plan coverage."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.index import Index, IndexBuildError, IndexFormatError, storage

TRAIN = TEXTS * 3
TRAIN_LABELS = [y % 2 for y in LABELS] * 3


@pytest.fixture(scope="module")
def tw(tokenizer):
    return TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=10, max_length=64)


@pytest.fixture(scope="module")
def built(tw, tmp_path_factory):
    path = tmp_path_factory.mktemp("integrity") / "index"
    Index.build(path, tw, TRAIN, TRAIN_LABELS, chunk_size=8, progress=False)
    return path


@pytest.fixture()
def copy(built, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(built, target)
    return target


def final_name(path: str, root: Path) -> str:
    """A synced path as it ends up in the index (temporary names mapped to their final ones)."""
    rel = os.path.relpath(path, root)
    rel = re.sub(r"\.(seg-\d+|projection)\.tmp-\d+", r"\1", rel)
    return re.sub(r"\.([\w.-]+)\.tmp-\d+$", r"\1", rel)


def test_every_file_and_directory_is_synced_before_the_manifest(tw, tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    root = (tmp_path / "index").resolve()
    index = Index.build(root, tw, TRAIN, TRAIN_LABELS, chunk_size=8, projection_dim=4, progress=False)
    index.append(TEXTS[:2], [0, 1], ids=["extra0", "extra1"])
    order = [final_name(p, root) for p in synced]
    files = {os.path.relpath(p, root) for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    folders = {"."} | {os.path.relpath(p, root) for p in root.rglob("*") if p.is_dir()}
    assert files - set(order) == set(), "files never synced"
    assert folders - set(order) == set(), "directories never synced"
    manifest_syncs = [i for i, name in enumerate(order) if name == "manifest.json"]
    assert len(manifest_syncs) == 2  # the build's and the append's
    first_build = order[: manifest_syncs[0]]
    for name in files - {"manifest.json"}:
        if not name.startswith("segments/seg-000003"):  # the appended segment comes after the build
            assert name in first_build, f"{name} synced after the manifest"
    assert "." in order[manifest_syncs[0]:manifest_syncs[1]] and "." in order[manifest_syncs[1]:]  # the rename of the manifest


def test_flipped_byte_in_a_large_file_is_caught_before_a_query(tw, copy, monkeypatch):
    monkeypatch.setattr(storage, "QUICK_HASH_LIMIT", 1000)  # rows.npy of a segment is larger: checked on first touch
    target = copy / "segments" / "seg-000001" / "rows.npy"
    assert target.stat().st_size > storage.QUICK_HASH_LIMIT
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    index = Index.open(copy, tracin=tw)  # quick: the large file is only size-checked here
    records = tw.capture(TEXTS[:2], [0, 1])
    errors = []

    def query():
        try:
            index.search(records, k=3)
        except IndexFormatError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=query) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and all(re.search(r"seg-000001/rows\.npy.*corrupted.*rebuild", e) for e in errors)
    assert "\n" not in errors[0]
    with pytest.raises(IndexFormatError, match=r"seg-000001/rows\.npy"):
        index.self_influence()


def test_large_files_are_hashed_once_per_segment(tw, built, monkeypatch):
    monkeypatch.setattr(storage, "QUICK_HASH_LIMIT", 1000)
    hashed: list[str] = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda path, *a: hashed.append(str(path)) or real(path, *a))
    index = Index.open(built, tracin=tw)
    large = [p for p in hashed if Path(p).stat().st_size > 1000]
    assert large == []  # opening hashes only the small files
    records = tw.capture(TEXTS[:2], [0, 1])
    expected = index.search(records, k=3)
    for _ in range(3):
        np.testing.assert_array_equal(index.search(records, k=3).proponent_indices, expected.proponent_indices)
    large = [p for p in hashed if Path(p).stat().st_size > 1000]
    assert len(large) == len(set(large)) > 0 and any(p.endswith("rows.npy") for p in large)


def test_the_first_touch_hashes_every_segment_side_by_side_and_a_later_corrupted_one_is_refused(tw, copy, monkeypatch):
    from tracinwe.index import integrity

    monkeypatch.setattr(storage, "QUICK_HASH_LIMIT", 1000)
    monkeypatch.setattr(integrity, "HASH_THREADS", 3)
    names = [s.name for s in Index.open(copy, tracin=tw, verify="none").manifest.segments]
    assert len(names) >= 3
    target = copy / "segments" / names[-1] / "rows.npy"
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x10
    target.write_bytes(bytes(data))
    hashed: list[tuple[str, str]] = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda path, *a: hashed.append((str(path), threading.current_thread().name))
                        or real(path, *a))
    index = Index.open(copy, tracin=tw)
    assert not any(Path(p).stat().st_size > 1000 for p, _ in hashed)  # opening hashes only the small files
    index.segment(0)  # the first touch: waits for segment 0, starts all the others
    for _ in range(200):
        large = {Path(p).parent.name for p, _ in hashed if Path(p).stat().st_size > 1000}
        if large == set(names):
            break
        threading.Event().wait(0.05)
    assert large == set(names)  # every segment hashed without being touched
    threads = {name for p, name in hashed if Path(p).stat().st_size > 1000}
    assert threads and all(t.startswith("tracinwe-verify") for t in threads)
    with pytest.raises(IndexFormatError, match=rf"{names[-1]}/rows\.npy.*corrupted"):
        index.search(tw.capture(TEXTS[:2], [0, 1]), k=3)
    with pytest.raises(IndexFormatError, match=rf"{names[-1]}/rows\.npy"):  # refused again, not forgotten
        index.segment(len(names) - 1)
    assert len([p for p, _ in hashed if p.endswith("rows.npy")]) == len(names)  # each hashed once


def test_eight_threads_on_a_fresh_index_get_the_serial_answer_and_each_large_file_is_hashed_once(tw, built, monkeypatch):
    from tracinwe.index import integrity

    monkeypatch.setattr(storage, "QUICK_HASH_LIMIT", 1000)
    monkeypatch.setattr(integrity, "HASH_THREADS", 2)
    records = tw.capture(TEXTS[:3], [0, 1, 0])
    want = Index.open(built, tracin=tw, verify="none").search(records, k=4)
    hashed: list[str] = []
    real = storage.sha256_file

    hashers: set[threading.Thread] = set()

    def slow(path, *a):  # hashing outlasts the threads' start, so they meet it half done
        threading.Event().wait(0.02)
        hashed.append(str(path))
        hashers.add(threading.current_thread())
        return real(path, *a)

    monkeypatch.setattr(storage, "sha256_file", slow)
    index = Index.open(built, tracin=tw)
    hashed.clear()
    got, errors = [None] * 8, []

    def query(i):
        try:
            got[i] = index.search(records, k=4)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=query, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for hits in got:
        for field in ("proponent_indices", "proponent_scores", "opponent_indices", "opponent_scores"):
            np.testing.assert_array_equal(getattr(hits, field), getattr(want, field))
    large = [p for p in hashed if Path(p).stat().st_size > 1000]
    assert len(large) == len(set(large)) and {Path(p).parent.name for p in large} == {
        s.name for s in index.manifest.segments}
    verifiers = [t for t in hashers if t.name.startswith("tracinwe-verify")]  # the threads that hashed the large files
    assert verifiers and all(t.daemon for t in verifiers)  # a process that ends early does not wait for the rest of the index


def test_a_process_that_read_one_segment_ends_without_hashing_the_rest(built, tmp_path):
    """The hashing of the other segments is speculative: the process exits while it runs (daemon threads)."""
    import subprocess
    import sys

    script = f"""
import threading, time
from tracinwe.index import storage
from tracinwe.index.integrity import LazyChecksums, read_manifest
storage.QUICK_HASH_LIMIT = 1000
real = storage.sha256_file
def slow(path, *a):  # in the hashing threads, every segment but the first takes a minute
    if threading.current_thread().name.startswith("tracinwe-verify") and "seg-000000" not in str(path):
        time.sleep(60)
    return real(path, *a)
storage.sha256_file = slow
manifest = read_manifest({str(built)!r})
checks = LazyChecksums({str(built)!r}, "quick")
for record in manifest.segments:
    checks.add(record)
checks.ensure(manifest.segments[0])
print("read segment 0", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr
    assert "read segment 0" in done.stdout


@pytest.mark.parametrize("name", ["../outside", "/tmp/outside", "seg-1/../../outside", "segment-000000"])
def test_segment_names_outside_the_index_are_refused(tw, copy, name):
    shutil.copytree(copy / "segments" / "seg-000000", copy / "outside")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["segments"][0]["name"] = name
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="not a segment name"):
        Index.open(copy, tracin=tw)


def test_file_names_outside_the_segment_are_refused(tw, copy):
    manifest = json.loads((copy / "manifest.json").read_text())
    files = manifest["segments"][0]["files"]
    files["../seg-000001/rows.npy"] = files.pop("rows.npy")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="not an index file"):
        Index.open(copy, tracin=tw)


def test_projection_file_names_outside_the_index_are_refused(tw, tmp_path):
    path = tmp_path / "projected"
    Index.build(path, tw, TRAIN[:8], TRAIN_LABELS[:8], chunk_size=4, projection_dim=2, progress=False)
    manifest = json.loads((path / "manifest.json").read_text())
    files = manifest["projection"]["files"]
    files["../segments/seg-000000/rows.npy"] = files.pop("rows.npy")
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="not an index file"):
        Index.open(path, tracin=tw)


def test_finish_build_checks_the_segments_cover_the_plan(copy):
    from dataclasses import replace

    from tracinwe.index.build import finish_build
    from tracinwe.index.integrity import read_manifest

    manifest = read_manifest(copy)
    plan = manifest.plan()
    segments = list(manifest.segments)
    shifted = [replace(segments[0], start=1)] + segments[1:]
    for records in (segments[:-1], segments + segments[-1:], shifted, segments[1:]):
        with pytest.raises(IndexBuildError, match="do not cover the plan exactly"):
            finish_build(copy, plan, records)
    assert finish_build(copy, plan, segments[::-1]) == manifest
