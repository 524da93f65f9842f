"""The on-disk index over causal-LM documents: its top-k equals brute-force `TracInWE.scores` (full and Top-k,
with and without a projection + exact re-rank), a duplicated document is the top proponent of its own completion,
append equals a fresh build, and an index opened with a model of the other task is a one-line error.

A 2-layer GPT-2 (width 32, BPE learned on the texts) trained briefly on real Rotten Tomatoes snippets.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import LABELS, TEXTS, tiny_bert
from tracinwe import TracInWE
from tracinwe.errors import LabelError
from tracinwe.index import Index, IndexBuildError, IndexMismatchError
from tracinwe.results import TopInfluences

MAX_LENGTH = 96
#: Cut into a prompt and the completion it explains (the prompt's last word starts the completion).
DUPLICATED = "the performances are uniformly excellent and the script is sharp and funny ."


def split(text: str, words: int) -> dict:
    head = text.split(" ")
    return {"prompt": " ".join(head[:words]), "completion": " " + " ".join(head[words:])}


@pytest.fixture(scope="module")
def corpus():
    """~120 short real snippets, a few prompt/completion dicts cut from others, and one document twice."""
    from tracinwe.data import load_dataset_source

    texts = [t for t in load_dataset_source("bundled:rotten-tomatoes").sample(400, seed=5).texts if 20 <= len(t) <= 100]
    docs: list = texts[:110]
    docs += [split(t, 3) for t in texts[110:125]]
    docs.insert(17, DUPLICATED)
    docs.insert(64, DUPLICATED)
    return docs


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=96, vocab_size=500, epochs=3, batch_size=16,
                           learning_rate=3e-3, num_checkpoints=2, max_length=MAX_LENGTH, seed=0)
    return train_decoder(corpus, tmp_path_factory.mktemp("lm-run") / "run", config)


@pytest.fixture(scope="module")
def tw(run):
    return TracInWE.from_checkpoints(run.checkpoints, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def queries(corpus):
    """Completions to explain: one cut from a training snippet, one new, one plain document."""
    return [split(corpus[3], 2), {"prompt": "a movie that", "completion": " is sharp and funny ."}, corpus[40]]


@pytest.fixture(scope="module")
def brute(tw, corpus, queries):
    """Brute-force `TracInWE.scores` of the queries against the corpus, by ``top_k`` (computed once each)."""
    cache: dict = {}

    def scores(top_k: int | None = None) -> np.ndarray:
        if top_k not in cache:
            facade = tw if top_k is None else topk_facade(tw, top_k)
            cache[top_k] = facade.scores(corpus, None, queries, None)
        return cache[top_k]

    return scores


def topk_facade(tw, top_k: int) -> TracInWE:
    return TracInWE.from_checkpoints(tw.checkpoint_paths, max_length=MAX_LENGTH, top_k=top_k)


def assert_same_top(found: TopInfluences, scores: np.ndarray, k: int, rtol: float = 1e-6) -> None:
    """Identical top-k rows and scores (to a tolerance scaled to the largest score); among exact ties (Top-k leaves
    many documents at 0) the index takes the lowest rows, so there only the scores must agree."""
    want = TopInfluences.from_scores(scores, k)
    tol = rtol * np.abs(scores).max()
    rows = np.arange(scores.shape[0])[:, None]
    for got_rows, got, want_rows, expected in [
        (found.proponent_indices, found.proponent_scores, want.proponent_indices, want.proponent_scores),
        (found.opponent_indices, found.opponent_scores, want.opponent_indices, want.opponent_scores),
    ]:
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
        np.testing.assert_allclose(scores[rows, got_rows], got, rtol=0, atol=tol)
        untied = (np.abs(scores[:, None, :] - expected[:, :, None]) <= tol).sum(-1) == 1  # no other row scores the same
        assert untied.mean() > 0.5  # the test has teeth: most of the top scores are distinct
        np.testing.assert_array_equal(got_rows[untied], want_rows[untied])


@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("projection_dim", [None, 8])
def test_index_top_k_equals_brute_force(tw, corpus, queries, brute, tmp_path, top_k, projection_dim):
    facade = tw if top_k is None else topk_facade(tw, top_k)
    scores = brute(top_k)
    index = Index.build(tmp_path / "index", facade, corpus, None, chunk_size=40, projection_dim=projection_dim, progress=False)
    assert index.is_causal_lm and index.manifest.task == "causal-lm" and index.label_names == []
    assert len(index) == len(corpus) and len(index.manifest.segments) == 4
    assert index.examples() == corpus  # dicts come back as dicts
    np.testing.assert_allclose(index.scores(queries), scores, rtol=0, atol=1e-6 * np.abs(scores).max())
    assert_same_top(index.search(queries, k=10), scores, 10)
    assert_same_top(index.search(facade.capture(queries), k=10), scores, 10)  # captured records or the examples
    if projection_dim is not None:  # the projected screen keeps 40 candidates of 127; the re-rank is exact
        assert_same_top(index.search(queries, k=5, candidates=40), scores, 5)
        assert index.searcher.start(facade.capture(queries), 5, 40).projected


def test_float16_projection_reranks_from_float16_rows(tw, corpus, queries, brute, tmp_path):
    """Rows stored in float16, screened through a PCA of 8 dims, rescored from the float16 rows: the scores are
    those of the rounded rows (to float16 precision of the brute-force ones) and the top proponents the same."""
    scores = brute()
    index = Index.build(tmp_path / "f16", tw, corpus, None, dtype="float16", projection_dim=8, progress=False)
    found = index.search(queries, k=5, candidates=40)
    rows = np.arange(len(queries))[:, None]
    tol = 2e-3 * np.abs(scores).max()
    np.testing.assert_allclose(found.proponent_scores, scores[rows, found.proponent_indices], rtol=0, atol=tol)
    np.testing.assert_allclose(found.opponent_scores, scores[rows, found.opponent_indices], rtol=0, atol=tol)
    want = TopInfluences.from_scores(scores, 5)
    np.testing.assert_array_equal(found.proponent_indices[:, 0], want.proponent_indices[:, 0])
    np.testing.assert_array_equal(found.opponent_indices[:, 0], want.opponent_indices[:, 0])


def test_duplicated_document_is_the_top_proponent_of_its_completion(tw, corpus, tmp_path):
    index = Index.build(tmp_path / "dup", tw, corpus, None, chunk_size=50, progress=False)
    (result,) = index.query([split(DUPLICATED, 4)], k=3, words=None)
    copies = {i for i, d in enumerate(corpus) if d == DUPLICATED}
    assert {n.row for n in result.proponents[:2]} == copies
    top = result.proponents[0]
    assert top.text == DUPLICATED and top.label == -1 and top.label_name == ""
    assert result.label == result.prediction == -1 and result.probabilities == [] and np.isfinite(result.loss)
    assert result.text == DUPLICATED
    assert sum(w.contribution for w in top.words) == pytest.approx(top.score, rel=1e-6)
    facade = tw.word_contributions(corpus[top.row], None, split(DUPLICATED, 4))
    ours = {w.token_id: (w.contribution, w.train_positions, w.test_positions) for w in top.words}
    theirs = {w.token_id: (w.contribution, w.train_positions, w.test_positions) for w in facade}
    assert ours.keys() == {t for t, v in theirs.items() if v[0] != 0.0}  # the index lists no exact zeros (the last
    # token's embedding feeds no target: its gradient is 0)
    for t, (value, train_at, test_at) in ours.items():
        assert value == pytest.approx(theirs[t][0], abs=1e-6 * abs(top.score))
        assert (train_at, test_at) == theirs[t][1:]
    # the token ids the build stored are what the model makes of the stored documents (strings and prompt/completion dicts)
    from tracinwe.index.queries import _token_ids

    rows = np.arange(len(index))
    assert index.token_ids(rows) == _token_ids(tw.final, index.examples(rows), None)


def test_append_then_search_equals_a_fresh_build(tw, corpus, queries, brute, tmp_path):
    fresh = Index.build(tmp_path / "fresh", tw, corpus, None, chunk_size=32, progress=False)
    grown = Index.build(tmp_path / "grown", tw, corpus[:70], None, chunk_size=32, progress=False)
    grown.append(corpus[70:])
    reopened = Index.open(tmp_path / "grown")  # the checkpoints reload from the recorded folders, as an LM
    assert reopened.tracin.is_causal_lm and len(reopened) == len(fresh) == len(corpus)
    assert reopened.examples() == fresh.examples() == corpus
    a, b = fresh.search(queries, k=8), reopened.search(queries, k=8)
    np.testing.assert_allclose(b.proponent_scores, a.proponent_scores, rtol=0, atol=1e-6 * np.abs(a.proponent_scores).max())
    np.testing.assert_allclose(b.opponent_scores, a.opponent_scores, rtol=0, atol=1e-6 * np.abs(a.opponent_scores).max())
    assert_same_top(a, brute(), 8)  # the same rows, up to the order of the two exactly tied copies of DUPLICATED
    assert_same_top(b, brute(), 8)


def test_task_mismatch_and_labels_are_one_line_errors(tw, corpus, tokenizer, tmp_path):
    lm_index = Index.build(tmp_path / "lm", tw, corpus[:30], None, progress=False)
    classifier = TracInWE([(tiny_bert(0, 2), 0.1)], tokenizer=tokenizer, max_length=32)
    with pytest.raises(IndexMismatchError) as err:
        Index.open(lm_index.path, tracin=classifier)
    assert "built for a causal-lm model" in str(err.value) and "\n" not in str(err.value)
    clf_index = Index.build(tmp_path / "clf", classifier, TEXTS, [y % 2 for y in LABELS], progress=False)
    assert clf_index.manifest.task == "classification" and not clf_index.is_causal_lm
    with pytest.raises(IndexMismatchError) as err:
        Index.open(clf_index.path, tracin=tw)
    assert "built for a classification model" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LabelError):
        Index.build(tmp_path / "labels", tw, corpus[:5], [0] * 5, progress=False)
    with pytest.raises(IndexBuildError, match="takes no labels"):
        Index.build(tmp_path / "names", tw, corpus[:5], None, label_names=["a", "b"], progress=False)
    with pytest.raises(LabelError):
        lm_index.append(corpus[30:32], [0, 1])


def test_failed_build_resumes_to_the_fresh_index(tw, corpus, queries, brute, tmp_path, monkeypatch):
    """A write failing mid-build leaves the committed segments; the rerun builds only the rest and ends identical."""
    import tracinwe.index.segments as segments  # where SegmentBuilder.write finds write_segment

    original, written = segments.write_segment, []

    def failing(root, number, *args, **kwargs):
        if number == 2:
            raise OSError("disk full (simulated)")
        written.append(number)
        return original(root, number, *args, **kwargs)

    monkeypatch.setattr(segments, "write_segment", failing)
    broken = tmp_path / "broken"
    with pytest.raises(OSError, match="disk full"):
        Index.build(broken, tw, corpus, None, chunk_size=32, progress=False)
    assert not (broken / "manifest.json").exists() and (broken / "build-plan.json").exists()
    def recording(root, number, *args, **kwargs):
        written.append(number)
        return original(root, number, *args, **kwargs)

    monkeypatch.setattr(segments, "write_segment", recording)
    before = list(written)
    resumed = Index.build(broken, tw, corpus, None, chunk_size=32, progress=False)
    assert 2 in written[len(before):] and not set(before) & set(written[len(before):])  # committed segments kept
    fresh = Index.build(tmp_path / "fresh", tw, corpus, None, chunk_size=32, progress=False)
    assert resumed.manifest == fresh.manifest and resumed.examples() == corpus
    assert_same_top(resumed.search(queries, k=8), brute(), 8)
