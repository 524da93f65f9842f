"""Pruned search (Cauchy-Schwarz bounds from stored row norms) returns the unpruned search's exact top k, ties included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_index_layout import LRS, random_records, write_index
from tracinwe.capture.records import TokenGradients
from tracinwe.index import products as index_products, pruning
from tracinwe.index.index import Index
from tracinwe.index.pruning import PostingsCount
from tracinwe.index.storage import MANIFEST, SEGMENTS
from tracinwe.results import TopInfluences


def float64_scores(test: list[TokenGradients], train: list[TokenGradients]) -> np.ndarray:
    """Brute force in float64 from dense (token, d) vectors per checkpoint, queries weighted in float32 like the index's."""
    vocab = sorted(set(torch.cat([r.token_ids for r in test + train]).tolist()))
    col = {t: i for i, t in enumerate(vocab)}
    out = 0.0
    for te, tr, lr in zip(test, train, LRS):
        def dense(rec, weight=1.0):
            x = np.zeros((len(rec), len(vocab), rec.dim))
            ex = np.repeat(np.arange(len(rec)), np.diff(rec.offsets.numpy()))
            x[ex, [col[t] for t in rec.token_ids.tolist()]] = (rec.rows.numpy() * np.float32(weight)).astype(np.float64)
            return x.reshape(len(rec), -1)
        out = out + dense(te, lr) @ dense(tr).T
    return out


def lowest_rows_top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows per query, ties broken by the lower row (the index's rule), for both directions."""
    cols = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    pro = np.lexsort((cols, -scores), axis=1)[:, :k]
    opp = np.lexsort((cols, scores), axis=1)[:, :k]
    return pro, opp


def searched(index: Index, test, k: int, prune: bool, **kwargs) -> tuple[TopInfluences, PostingsCount]:
    search = index.searcher.start(test, k, prune=prune, **kwargs)
    return index.searcher.rank(search, index.searcher.screen(search)), search.count


def assert_same(a: TopInfluences, b: TopInfluences, scale: float, rows: bool = True) -> None:
    """Same scores; same rows except where two scores are within float32 rounding (``rows=False``: scores only).

    The unpruned screen sums float32 products, the pruned one float64: near-ties may swap, nothing else.
    """
    pairs = ((a.proponent_indices, b.proponent_indices, a.proponent_scores, b.proponent_scores),
             (a.opponent_indices, b.opponent_indices, a.opponent_scores, b.opponent_scores))
    for ra, rb, sa, sb in pairs:
        np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-7 * scale)
        if rows:
            differ = ra != rb
            assert (np.abs(sa - sb)[differ] <= 1e-6 * scale).all()


def assert_exact(hits: TopInfluences, brute: np.ndarray, k: int) -> None:
    """Rows are the top k of ``brute`` (lower row first among ties) and carry their float64 scores."""
    pro, opp = lowest_rows_top(brute, k)
    rows = np.arange(brute.shape[0])[:, None]
    np.testing.assert_array_equal(hits.proponent_indices, pro)
    np.testing.assert_array_equal(hits.opponent_indices, opp)
    scale = np.abs(brute).max()
    np.testing.assert_allclose(hits.proponent_scores, brute[rows, pro], rtol=1e-6, atol=1e-9 * scale)
    np.testing.assert_allclose(hits.opponent_scores, brute[rows, opp], rtol=1e-6, atol=1e-9 * scale)


@pytest.fixture(autouse=True, params=["sketch", "up-front", "bounded"])
def dense_mode(request, monkeypatch):
    """Every test runs with the dense block ranked by its sketch (the default), and, as for segments without one,
    scored up front in float32 then rescored in float64, or bounded like a token."""
    monkeypatch.setattr(pruning, "DENSE_SKETCH", request.param == "sketch")
    monkeypatch.setattr(pruning, "DENSE_UP_FRONT", request.param == "up-front")
    return request.param


def with_rows(records: list[TokenGradients], transform) -> list[TokenGradients]:
    return [TokenGradients(r.offsets, r.token_ids, transform(r.rows), r.labels, r.logits) for r in records]


def integer_rows(records):
    """Rows of small integers: every product and sum is exact in float64, so duplicates tie exactly."""
    return with_rows(records, lambda rows: torch.round(rows * 2))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_pruned_equals_unpruned_and_brute_force_on_random_data(tmp_path, dtype, k):
    train, test = integer_rows(random_records(400, 0, 1.0)), integer_rows(random_records(9, 1, 1.0))
    brute = float64_scores(test, train)
    index = write_index(tmp_path / "ix", train, dtype, 64)
    pruned, count = searched(index, test, k, prune=True)
    assert_exact(pruned, brute, k)
    if dtype == "float32":
        assert_same(pruned, searched(index, test, k, prune=False)[0], np.abs(brute).max(), rows=False)
    assert 0 < count.rows_read <= count.rows_total


def test_ties_negative_only_scores_and_all_frequent_tokens(tmp_path):
    base = integer_rows(random_records(60, 2, 1.0))
    train = [r.select(list(range(60)) * 4) for r in base]  # every example four times: exact ties at every cut
    train = with_rows(train, torch.abs)  # train rows >= 0 ...
    test = with_rows(integer_rows(random_records(5, 3, 1.0)), lambda rows: -torch.abs(rows) - 1)  # ... query rows < 0
    brute = float64_scores(test, train)
    assert (brute <= 0).all() and (brute < 0).any()  # proponents are the least negative (and zero) scores
    index = write_index(tmp_path / "ix", train, "float32", 50)
    for k in (1, 3, 7, 30):
        pruned, _ = searched(index, test, k, prune=True)
        assert_exact(pruned, brute, k)
        assert_same(pruned, searched(index, test, k, prune=False)[0], np.abs(brute).max(), rows=False)
    # a query whose every token is frequent: every term is bounded, none read in full up front
    frequent = [r.select([0, 1, 2]) for r in train]
    hits, count = searched(index, frequent, 4, prune=True)
    assert_exact(hits, float64_scores(frequent, train), 4)


def test_pruning_skips_postings_that_cannot_win(tmp_path):
    """A frequent token with tiny rows and a rare one with large rows: the frequent token's postings are skipped."""
    n, dim = 2000, 8
    rng = np.random.default_rng(0)
    records = []
    for _ in LRS:
        ids, offsets, rows = [], [0], []
        for i in range(n):
            toks = [7, 500 + i % 20]  # token 7 everywhere (frequent, tiny rows), one of 20 rarer tokens
            ids += toks
            rows += [rng.standard_normal(dim) * 1e-3, rng.standard_normal(dim)]
            offsets.append(len(ids))
        records.append(TokenGradients(torch.tensor(offsets), torch.tensor(ids), torch.tensor(np.array(rows), dtype=torch.float32),
                                      torch.zeros(n, dtype=torch.long), torch.zeros(n, 2)))
    test = [r.select([3, 10]) for r in records]
    index = write_index(tmp_path / "ix", records, "float32", 500)
    hits, count = searched(index, test, 5, prune=True)
    assert_exact(hits, float64_scores(test, records), 5)
    assert count.rows_total == 2200 and count.rows_read < count.rows_total / 4  # token 7's 2000 postings mostly unread


def test_batched_queries_equal_one_at_a_time(tmp_path):
    train, test = integer_rows(random_records(300, 4, 1.0)), integer_rows(random_records(8, 5, 1.0))
    index = write_index(tmp_path / "ix", train, "float32", 64)
    batch = index.search(test, k=6, prune=True)
    ones = [index.search([r.select([i]) for r in test], k=6, prune=True) for i in range(8)]
    stacked = TopInfluences(*(np.concatenate([getattr(o, f) for o in ones]) for f in
                              ("proponent_indices", "proponent_scores", "opponent_indices", "opponent_scores")))
    np.testing.assert_array_equal(batch.proponent_indices, stacked.proponent_indices)  # float64 scores: no swaps
    np.testing.assert_array_equal(batch.opponent_indices, stacked.opponent_indices)
    assert_same(batch, stacked, np.abs(batch.proponent_scores).max())


def test_index_without_norms_searches_exactly_without_pruning(tmp_path):
    """An index written before the norms existed (no row_norms/dense_norms files) still opens and searches exactly."""
    train, test = integer_rows(random_records(200, 6, 1.0)), integer_rows(random_records(4, 7, 1.0))
    root = tmp_path / "old"
    write_index(root, train, "float32", 64)
    manifest = json.loads((root / MANIFEST).read_text())
    for seg in manifest["segments"]:
        for name in ("row_norms.npy", "dense_norms.npy"):
            (root / SEGMENTS / seg["name"] / name).unlink()
            del seg["files"][name]
    (root / MANIFEST).write_text(json.dumps(manifest))
    from tracinwe.index.integrity import read_manifest

    index = Index(root, read_manifest(root), tracin=None)
    assert not index.searcher.prunable
    hits, count = searched(index, test, 5, prune=True)
    assert count.rows_total == 0  # the plain screen ran
    brute = float64_scores(test, train)
    np.testing.assert_allclose(hits.proponent_scores, TopInfluences.from_scores(brute, 5).proponent_scores, rtol=1e-5)


# -- real text ---------------------------------------------------------------------------------

QUERIES = [
    "a gorgeous , witty , seductive movie .",
    "the movie is a mess , and a boring one at that .",
    "an utterly charming and hilarious film that reaches into the heart .",
    "it is not a bad movie , just a forgettable one .",
]


@pytest.fixture(scope="module")
def real(tokenizer, tmp_path_factory):
    from conftest import tiny_bert
    from tracinwe import TracInWE
    from tracinwe.data import load_dataset_source

    data = load_dataset_source("bundled:rotten-tomatoes").dedupe().sample(160, seed=2)
    out = {}
    for name, top_k, projection_dim in (("full", None, None), ("top10", 10, None), ("projected", None, 8)):
        tw = TracInWE([(tiny_bert(0, 2), 0.1), (tiny_bert(1, 2), 0.03)], tokenizer=tokenizer, top_k=top_k, max_length=64)
        index = Index.build_from_dataset(tmp_path_factory.mktemp(name) / "ix", tw, data, chunk_size=40, progress=False,
                                         projection_dim=projection_dim)
        out[name] = (tw, index, tw.scores(data.texts, data.labels, QUERIES, [1, 0, 1, 0]))
    return data, out


@pytest.mark.parametrize("name", ["full", "top10", "projected"])
def test_pruned_search_equals_unpruned_and_brute_force_on_real_text(real, name):
    _, indexes = real
    tw, index, brute = indexes[name]
    records = tw.capture(QUERIES, [1, 0, 1, 0])
    scale = np.abs(brute).max()
    for k in (1, 3, 10, 40):
        pruned, count = searched(index, records, k, prune=True, use_projection=False)
        assert count.rows_total > 0  # the pruned path ran
        assert_same(pruned, searched(index, records, k, prune=False, use_projection=False)[0], scale)
        assert_same(pruned, TopInfluences.from_scores(brute, k), scale)
    if name == "projected":  # a projected screen is not pruned; its rescored top k is still exact
        assert_same(index.search(records, k=5), TopInfluences.from_scores(brute, 5), scale, rows=False)


def test_query_words_equal_word_contributions_and_unpruned(real):
    data, indexes = real
    tw, index, brute = indexes["full"]
    pruned = index.query(QUERIES, [1, 0, 1, 0], k=4, words=5, prune=True)
    scale = np.abs(brute).max()
    assert_results_match(pruned, index.query(QUERIES, [1, 0, 1, 0], k=4, words=5, prune=False), scale, 0.0)
    for i, result in enumerate(pruned):
        for n in result.proponents[:2] + result.opponents[:2]:
            reference = tw.word_contributions(data.texts[n.row], data.labels[n.row], QUERIES[i], [1, 0, 1, 0][i])[:5]
            assert [w.token_id for w in n.words] == [w.token_id for w in reference]
            np.testing.assert_allclose([w.contribution for w in n.words], [w.contribution for w in reference], rtol=1e-4,
                                       atol=1e-7 * np.abs(brute).max())
            assert [(w.train_positions, w.test_positions, w.token) for w in n.words] == \
                [(w.train_positions, w.test_positions, w.token) for w in reference]
    one_by_one = [index.query([q], [y], k=4, words=5)[0] for q, y in zip(QUERIES, [1, 0, 1, 0])]
    assert_results_match(pruned, one_by_one, scale, 1e-4)  # batched queries equal one at a time (captured alone)


def assert_results_match(a, b, scale: float, words_rtol: float) -> None:
    """The same neighbours and shared words; scores equal to float32 rounding, contributions to ``words_rtol``."""
    for ra, rb in zip(a, b, strict=True):
        for na, nb in zip(ra.proponents + ra.opponents, rb.proponents + rb.opponents, strict=True):
            assert na.row == nb.row and na.score == pytest.approx(nb.score, rel=1e-5, abs=1e-7 * scale)
            assert [(w.token, w.token_id, w.train_positions, w.test_positions) for w in na.words] == \
                [(w.token, w.token_id, w.train_positions, w.test_positions) for w in nb.words]
            np.testing.assert_allclose([w.contribution for w in na.words], [w.contribution for w in nb.words],
                                       rtol=words_rtol, atol=1e-7 * scale if words_rtol else 0)


@pytest.mark.parametrize("group", [1, 3, 5])
def test_queries_in_groups_equal_one_group(tmp_path, monkeypatch, group):
    """A pruned screen takes the queries a group at a time: the result is the same as all in one group."""
    from tracinwe.index import searcher

    train, test = integer_rows(random_records(300, 14, 1.0)), integer_rows(random_records(11, 15, 1.0))
    index = write_index(tmp_path / "ix", train, "float32", 64)
    whole = index.search(test, k=4, prune=True)
    monkeypatch.setattr(searcher, "PRUNE_GROUP", group)
    grouped = index.search(test, k=4, prune=True)
    np.testing.assert_array_equal(grouped.proponent_indices, whole.proponent_indices)
    np.testing.assert_array_equal(grouped.opponent_indices, whole.opponent_indices)
    scale = np.abs(whole.proponent_scores).max()  # float64 sums in another order: equal to rounding
    np.testing.assert_allclose(grouped.proponent_scores, whole.proponent_scores, rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(grouped.opponent_scores, whole.opponent_scores, rtol=1e-12, atol=1e-12 * scale)
    assert_exact(grouped, float64_scores(test, train), 4)


def test_query_block_part_equals_the_block_of_those_queries(tmp_path):
    train, test = random_records(50, 16, 1.0), random_records(7, 17, 1.0)
    index = write_index(tmp_path / "ix", train, "float32", 64)
    block = index.query_block(test)
    part = block.part(2, 5)
    alone = index.query_block([r.select([2, 3, 4]) for r in test])
    for name in ("dense", "tokens", "offsets", "examples", "rows"):
        np.testing.assert_array_equal(getattr(part, name), getattr(alone, name))
    assert part.n == 3


@pytest.mark.parametrize("share", [0.0, 1 / 64, 1.0], ids=["term-by-term", "default", "finish-at-once"])
def test_finishing_the_candidates_at_once_equals_term_by_term(tmp_path, monkeypatch, share):
    """The candidates get the pending terms one by one (share 0: the coarse bound never suffices), all at once after the
    coarse bound (share 1) or as by default: same top k."""
    monkeypatch.setattr(pruning, "FINISH_SHARE", share)
    monkeypatch.setattr(pruning, "COARSE_SHARE", share if share != 1 / 64 else pruning.COARSE_SHARE)
    train, test = integer_rows(random_records(500, 18, 1.0)), integer_rows(random_records(6, 19, 1.0))
    index = write_index(tmp_path / "ix", train, "float16", 128)
    brute = float64_scores(test, [with_rows(train, lambda rows: rows.half().float())[c] for c in range(2)])
    for k in (1, 4, 12):
        assert_exact(searched(index, test, k, prune=True)[0], brute, k)


@pytest.mark.parametrize("chunk", [7, 1 << 13], ids=["many-chunks", "one-chunk"])
def test_first_pass_equals_term_by_term_products_and_bounds(tmp_path, monkeypatch, chunk):
    """The vectorised first pass: short terms' scores equal each term's products, long terms' bounds each term's
    Cauchy-Schwarz bounds, scattered one by one (and every bound covers its term's true products)."""
    monkeypatch.setattr(index_products, "ROW_CHUNK", chunk)
    train, test = random_records(300, 20, 1.0), random_records(6, 21, 1.0)
    index = write_index(tmp_path / "ix", train, "float16", 128)
    q = index.query_block(test)
    seg = index.searcher.segment(0, False)
    q_norms, _ = pruning.query_norms(q, seg.rows.shape[1], seg.dense.shape[2])
    terms = pruning.shared_term_array(seg, q)
    long = terms[:, 1] - terms[:, 0] > 8
    assert long.any() and (~long).any()
    scores = np.zeros((seg.num_examples, q.n))
    bounds, largest = np.zeros_like(scores), []
    products = np.zeros_like(scores)
    for (lo, hi, qlo, qhi), is_long in zip(terms.tolist(), long):
        grid = np.ix_(np.asarray(seg.postings[lo:hi]), q.examples[qlo:qhi])
        if is_long:
            bounds[grid] += pruning._term_bound(seg, q_norms, lo, hi, qlo, qhi)
            largest.append(pruning._term_bound(seg, q_norms, lo, hi, qlo, qhi).max())
            products[grid] += np.abs(pruning._products(seg, q, lo, hi, qlo, qhi, None))
        else:
            scores[grid] += pruning._products(seg, q, lo, hi, qlo, qhi, None)
    scale = np.abs(scores).max()
    np.testing.assert_allclose(pruning._short_term_scores(seg, q, terms[~long]), scores, rtol=1e-12, atol=1e-12 * scale)
    got, got_largest = pruning._long_term_bounds(seg, q, q_norms, terms[long])
    np.testing.assert_allclose(got, bounds, rtol=1e-12, atol=1e-12 * bounds.max())
    assert (got >= products).all() and (got_largest >= np.array(largest) * (1 - 1e-12)).all()


@pytest.mark.parametrize("threads", [1, 3])
def test_segments_screened_by_several_threads_equal_one(tmp_path, monkeypatch, threads):
    """Threads screen every so-many-th segment with their own thresholds; the merged top k is one thread's, exactly."""
    from tracinwe.index import searcher

    train, test = integer_rows(random_records(500, 22, 1.0)), integer_rows(random_records(7, 23, 1.0))
    index = write_index(tmp_path / "ix", train, "float32", 48)
    monkeypatch.setattr(searcher, "SEARCH_THREADS", 1)
    one = index.search(test, k=5, prune=True)
    monkeypatch.setattr(searcher, "SEARCH_THREADS", threads)
    assert searcher.search_threads() == threads
    several, count = searched(index, test, 5, prune=True)
    for field in ("proponent_indices", "proponent_scores", "opponent_indices", "opponent_scores"):
        np.testing.assert_array_equal(getattr(several, field), getattr(one, field))
    assert_exact(several, float64_scores(test, train), 5)
    assert 0 < count.rows_read <= count.rows_total


@pytest.mark.parametrize("longest", [1, 2, 3, 40, 3000])
def test_find_sorted_equals_searchsorted_per_run(longest):
    """The vectorised binary search finds each row where `np.searchsorted` on its own run does: empty runs, runs of one,
    rows before, inside and past a run, and the last run ending at the array's end."""
    from tracinwe.index.words import find_sorted

    rng = np.random.default_rng(longest)
    runs = rng.integers(0, longest + 1, size=60)
    runs[-1] = max(runs[-1], 1)
    offsets = np.concatenate([[0], np.cumsum(runs)])
    postings = np.concatenate([np.sort(rng.choice(10 * longest + 10, r, replace=False)) for r in runs]).astype(np.int32)
    run = rng.integers(0, runs.size, 2000)
    lo, hi = offsets[run], offsets[run + 1]
    inside = postings[np.minimum(lo + rng.integers(0, longest + 1, run.size), postings.size - 1)]
    rows = np.where(rng.random(run.size) < 0.5, inside, rng.integers(-1, 10 * longest + 12, run.size)).astype(np.int64)
    at, found = find_sorted(postings, lo, hi, rows)
    for e in range(run.size):
        segment = postings[lo[e]:hi[e]]
        j = int(np.searchsorted(segment, rows[e]))
        want = j < segment.size and segment[j] == rows[e]
        assert found[e] == want, e
        if want:
            assert at[e] == lo[e] + j
    assert found.any() and not found.all()
    empty_at, empty_found = find_sorted(postings[:0], lo[:3] * 0, lo[:3] * 0, rows[:3])
    assert not empty_found.any()


def test_tokens_in_examples_is_membership_in_each_examples_stored_tokens():
    """The words' filter keeps an entry exactly when its token is among its example's stored token ids (examples with
    no tokens, repeated tokens and rows asked for several times included)."""
    from tracinwe.index.search import SegmentArrays
    from tracinwe.index.words import tokens_in_examples

    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 12, size=40)
    lengths[3] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = rng.integers(0, 30, size=int(offsets[-1])).astype(np.int32)
    seg = SegmentArrays(0, 40, np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.int32), rows=np.zeros(0),
                        dense=np.zeros(0), example_tokens=tokens, example_token_offsets=offsets)
    local = rng.integers(0, 40, size=25)
    local[:2] = 3  # an example without tokens
    pair = rng.integers(0, local.size, size=500)
    token = rng.integers(0, 35, size=500)
    got = tokens_in_examples(seg, local, pair, token)
    want = [int(t) in set(tokens[offsets[local[p]]:offsets[local[p] + 1]].tolist()) for p, t in zip(pair, token)]
    assert got.tolist() == want and 0 < sum(want) < len(want)
