"""Several threads querying one `Index` (or scoring with one `TracInWE`) get the serial answers.

The model is shared: captures from different threads must not mix their
embedding lookups, and the model's train/eval modes and ``requires_grad``
flags must be what they were once every thread is done.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.index import Index

THREADS = 8
QUERIES = [f"{t} #{i}" for i, t in enumerate(TEXTS * 6)][:32]


def _model_state(models) -> list:
    return [[(n, p.requires_grad) for n, p in m.named_parameters()] + [(n, s.training) for n, s in m.named_modules()]
            for m in models]


@pytest.fixture(scope="module")
def shared(tokenizer, tmp_path_factory):
    """Two tiny checkpoints in mixed states (one in train mode, some weights frozen) and a small index."""
    models = [tiny_bert(0, 2), tiny_bert(1, 2)]
    models[0].train()
    models[1].classifier.train()
    for p in models[1].bert.encoder.layer[0].parameters():
        p.requires_grad_(False)
    tw = TracInWE([(models[0], 0.1), (models[1], 0.03)], tokenizer=tokenizer, max_length=32, batch_size=4)
    texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 4)]
    index = Index.build(tmp_path_factory.mktemp("conc") / "idx", tw, texts, LABELS * 4, chunk_size=8, progress=False)
    return models, tw, index


def test_threads_query_one_index_and_get_the_serial_answers(shared):
    """8 threads x 400 queries (25 calls of 16 texts each) equal the serial answers exactly."""
    models, _, index = shared
    before = _model_state(models)
    batches = [QUERIES[b : b + 16] for b in range(0, len(QUERIES), 16)]
    serial = [[r.to_json() for r in index.query(batch, k=3, words=0)] for batch in batches]

    def run(t: int) -> list[tuple[int, list]]:
        out = []
        for j in range(t, t + 25):
            b = j % len(batches)
            out.append((b, [r.to_json() for r in index.query(batches[b], k=3, words=0)]))
        return out

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        answers = [a for part in pool.map(run, range(THREADS)) for a in part]
    assert sum(len(found) for _, found in answers) == THREADS * 400
    for b, found in answers:
        assert found == serial[b]
    assert _model_state(models) == before


def test_threads_query_with_words_and_get_the_serial_answers(shared):
    """8 threads querying with shared words (each search keeps its segments mapped for them and releases the pages it
    read) get the serial answers, words included."""
    _, _, index = shared
    batches = [QUERIES[b : b + 16] for b in range(0, len(QUERIES), 16)]
    serial = [[r.to_json() for r in index.query(batch, k=3)] for batch in batches]
    assert any(n["words"] for r in serial[0] for n in r["proponents"] + r["opponents"])  # words were asked and found

    def run(t: int) -> list[tuple[int, list]]:
        return [(j % len(batches), [r.to_json() for r in index.query(batches[j % len(batches)], k=3)])
                for j in range(t, t + 6)]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        answers = [a for part in pool.map(run, range(THREADS)) for a in part]
    assert len(answers) == THREADS * 6
    for b, found in answers:
        assert found == serial[b]


def test_threads_score_with_one_tracin_and_get_the_serial_answers(shared):
    models, tw, index = shared
    before = _model_state(models)
    train = index.texts()[:12]
    serial = tw.scores(train, LABELS * 2, QUERIES[:4])

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = list(pool.map(lambda _: tw.scores(train, LABELS * 2, QUERIES[:4]), range(4 * THREADS)))
    for r in results:
        np.testing.assert_array_equal(r, serial)
    assert _model_state(models) == before


def test_threads_share_checkpoint_folders(shared, tokenizer, tmp_path):
    """Folder checkpoints are loaded one at a time: each thread still scores with the checkpoint it asked for."""
    from tracinwe.models.checkpoints import write_checkpoint_info

    models, _, _ = shared
    folders = []
    for c, (model, lr) in enumerate(zip(models, (0.1, 0.03))):
        folder = tmp_path / f"checkpoint-{c + 1}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_checkpoint_info(folder, lr, step=c + 1)
        folders.append(folder)
    tw = TracInWE.from_checkpoints(folders, max_length=32, batch_size=4)
    serial = tw.scores(TEXTS, LABELS, QUERIES[:2])
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: tw.scores(TEXTS, LABELS, QUERIES[:2]), range(12)))
    for r in results:
        np.testing.assert_array_equal(r, serial)
