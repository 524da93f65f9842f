"""Fact tracing and its LM baselines: rank metrics by hand, BM25, last-layer and projected gradients against
dense autograd, the tail-patch step, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines.lm_baselines import (
    bm25_scores,
    lm_last_layer_scores,
    lm_projected_gradient_scores,
    tracked_layers,
)
from tracinwe.models.causal_lm import CausalLanguageModel

CORPUS = [
    "the cat sat on the mat .",
    "a dog ran in the park and the cat watched .",
    "Varno Teliset was born in Lisbon .",
    "the river runs past the old mill to the sea .",
    "Mira Osk works as a baker .",
    "rain fell on the town all night long .",
]
TRAIN = [
    "the cat sat on the mat .",
    {"prompt": "Varno Teliset was born in", "completion": " Lisbon"},
    "a dog ran in the park and the cat watched .",
    {"prompt": "Mira Osk works as a", "completion": " baker"},
    "rain fell on the town all night long .",
]
QUERIES = [
    {"prompt": "Mira Osk was born in", "completion": " Lisbon"},
    "the cat ran in the park .",
]


@pytest.fixture(scope="module")
def bpe():
    from tracinwe.training.causal_lm import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS * 3, vocab_size=400, min_frequency=1)


def tiny_gpt2(tokenizer, seed: int, tied: bool = True):
    from test_causal_lm import tiny_gpt2 as gpt2

    return gpt2(tokenizer, seed, tied, n_embd=16)


def summed_loss(lm: CausalLanguageModel, example) -> torch.Tensor:
    return lm.token_losses(lm.tokenize([example])).sum()


def per_example_grads(lm: CausalLanguageModel, examples, params) -> torch.Tensor:
    rows = []
    for ex in examples:
        grads = torch.autograd.grad(summed_loss(lm, ex), params)
        rows.append(torch.cat([g.flatten() for g in grads]).double())
    return torch.stack(rows)


# -- BM25 --------------------------------------------------------------------------------------------


def test_bm25_ranks_the_exact_match_first_and_is_query_by_train():
    train = ["the cat sat on the mat", "Varno Teliset was born in Lisbon", "a dog ran in the park"]
    scores = bm25_scores(train, ["Varno Teliset was born in Lisbon", {"prompt": "a dog ran", "completion": " in the park"},
                                 "zzz qqq"])
    assert scores.shape == (3, 3)
    assert scores[0].argmax() == 1 and scores[1].argmax() == 2
    assert np.all(scores[2] == 0)  # no shared term: nothing is relevant
    assert scores[0, 1] > 0 and scores[0, 0] == 0


# -- last layer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_last_layer_scores_equal_dense_autograd_of_the_output_projection(bpe, tied):
    models = [tiny_gpt2(bpe, 0, tied), tiny_gpt2(bpe, 1, tied)]
    rates = [0.5, 0.25]
    got = lm_last_layer_scores(list(zip(models, rates)), TRAIN, QUERIES, tokenizer=bpe, batch_size=2)
    expected = np.zeros_like(got)
    for model, lr in zip(models, rates):
        lm = CausalLanguageModel(model, bpe, max_length=64)
        if tied:  # the output side only: differentiate a detached copy of the weight used by the head alone
            head = model.get_output_embeddings()
            copy = torch.nn.Parameter(head.weight.detach().clone())
            original = head.weight
            head.weight = copy
            try:
                assert model.get_input_embeddings().weight is not copy
                q = per_example_grads(lm, QUERIES, [copy])
                x = per_example_grads(lm, TRAIN, [copy])
            finally:
                head.weight = original
        else:
            weight = model.get_output_embeddings().weight
            q, x = per_example_grads(lm, QUERIES, [weight]), per_example_grads(lm, TRAIN, [weight])
        expected += lr * (q @ x.T).numpy()
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * scale)


# -- projected gradients (TrackStar-like) ---------------------------------------------------------------


def exact_cosines(models, tokenizer, train, queries) -> np.ndarray:
    """Cosine of the full gradients of every tracked weight matrix (plain autograd), summed over checkpoints."""
    total = np.zeros((len(queries), len(train)))
    for model in models:
        lm = CausalLanguageModel(model, tokenizer, max_length=64)
        q = per_example_grads(lm, queries, [mod.weight for _, mod in tracked_layers(model)])
        x = per_example_grads(lm, train, [mod.weight for _, mod in tracked_layers(model)])
        q, x = q / q.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True)
        total += (q @ x.T).numpy()
    return total



def test_projected_scores_are_the_exact_gradient_cosine_when_nothing_is_projected_and_close_when_projected(bpe):
    models = [tiny_gpt2(bpe, 0, tied=False), tiny_gpt2(bpe, 3, tied=False)]
    checkpoints = [(m, 1e-3) for m in models]
    exact = exact_cosines(models, bpe, TRAIN, QUERIES)
    widest = max(max(mod.weight.shape) for _, mod in tracked_layers(models[0]))
    big = lm_projected_gradient_scores(checkpoints, TRAIN, QUERIES, dim=widest**2 * 20, tokenizer=bpe)
    np.testing.assert_allclose(big, exact, atol=1e-8)
    # projected (each layer to an 8 x 8 Kronecker factor pair: 640 dims for ~6,000 weights): JL-close
    small = lm_projected_gradient_scores(checkpoints, TRAIN, QUERIES, dim=640, seed=1, tokenizer=bpe)
    assert np.abs(small - exact).max() < 0.35 * 2  # two checkpoints, each cosine within ~0.35
    assert np.corrcoef(small.ravel(), exact.ravel())[0, 1] > 0.9
    again = lm_projected_gradient_scores(checkpoints, TRAIN, QUERIES, dim=640, seed=1, tokenizer=bpe)
    np.testing.assert_array_equal(small, again)  # seeded


def test_second_moment_normalisation_changes_the_cosines_and_ones_leave_them(bpe):
    model = tiny_gpt2(bpe, 0, tied=False)
    widest = max(max(mod.weight.shape) for _, mod in tracked_layers(model))
    plain = lm_projected_gradient_scores([(model, 1e-3)], TRAIN, QUERIES, dim=widest**2 * 20, tokenizer=bpe)
    ones = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    same = lm_projected_gradient_scores([(model, 1e-3)], TRAIN, QUERIES, dim=widest**2 * 20, tokenizer=bpe,
                                        second_moments=[ones])
    np.testing.assert_allclose(same, plain, atol=1e-10)
    rng = torch.Generator().manual_seed(0)
    skewed = {n: torch.rand(p.shape, generator=rng) ** 4 + 1e-6 for n, p in model.named_parameters()}
    other = lm_projected_gradient_scores([(model, 1e-3)], TRAIN, QUERIES, dim=widest**2 * 20, tokenizer=bpe,
                                         second_moments=[skewed])
    assert np.abs(other - plain).max() > 1e-3


# -- errors ------------------------------------------------------------------------------------------------


def test_bad_inputs_get_one_line_errors(bpe):
    model = tiny_gpt2(bpe, 0)
    for call in (
        lambda: bm25_scores([], ["x"]),
        lambda: bm25_scores(["x"], []),
        lambda: lm_last_layer_scores([(model, 1.0)], TRAIN, [], tokenizer=bpe),
        lambda: lm_last_layer_scores([], TRAIN, QUERIES, tokenizer=bpe),
        lambda: lm_projected_gradient_scores([(model, 1.0)], [], QUERIES, tokenizer=bpe),
        lambda: lm_projected_gradient_scores([(model, 1.0)], TRAIN, QUERIES, dim=0, tokenizer=bpe),
        lambda: lm_projected_gradient_scores([(model, 1.0)], TRAIN, QUERIES, tokenizer=bpe, second_moments=[None, None]),
        lambda: lm_last_layer_scores([model], TRAIN, QUERIES, tokenizer=bpe),
    ):
        with pytest.raises(TracInWEError) as info:
            call()
        assert "\n" not in str(info.value)


# -- rank metrics ------------------------------------------------------------------------------------------


def test_reciprocal_rank_and_recall_by_hand():
    from tracinwe.evaluate.fact_tracing import recall_at_k, reciprocal_rank

    scores = [0.9, 0.1, 0.5, 0.7, 0.3]
    assert reciprocal_rank(scores, [2, 4]) == pytest.approx(1 / 3)  # 0.9 and 0.7 (not gold) rank above 0.5
    assert recall_at_k(scores, [2, 4], k=2) == 0.0
    assert recall_at_k(scores, [2, 4], k=3) == 0.5
    assert recall_at_k(scores, [2, 4], k=5) == 1.0
    assert reciprocal_rank(scores, [0]) == 1.0
    # ties are broken in expectation: 1 gold among 5 equal scores sits at position 3 on average
    assert reciprocal_rank(np.zeros(5), [1]) == pytest.approx(1 / 3)
    assert recall_at_k(np.zeros(5), [1], k=2) == pytest.approx(2 / 5)
    # 2 gold among 4 equal scores: the first gold one is expected at (4 + 1) / (2 + 1)
    assert reciprocal_rank(np.zeros(4), [0, 1]) == pytest.approx(3 / 5)
    # a tie that straddles the cut: [1, 0.5, 0.5, 0.5], gold 2, k=2: one of three tied slots left
    assert recall_at_k([1, 0.5, 0.5, 0.5], [2], k=2) == pytest.approx(1 / 3)


def test_evaluate_fact_tracing_summarises_and_pairs():
    from tracinwe.evaluate.fact_tracing import evaluate_fact_tracing

    gold = [[0], [1], [2]]
    perfect = np.eye(3)
    reversed_ = 1 - np.eye(3)
    report = evaluate_fact_tracing({"perfect": perfect, "worst": reversed_}, gold, k=1, subsets={"first two": [1, 1, 0]})
    summary = report.summary()
    assert summary["perfect"]["mrr"] == 1.0 and summary["perfect"]["recall@1"] == 1.0
    assert summary["worst"]["mrr"] == pytest.approx(1 / 3) and summary["worst"]["recall@1"] == 0.0
    assert report.summary("first two")["worst"]["n"] == 2
    diff = report.paired("worst")["perfect"]["rr"]
    assert diff["mean"] == pytest.approx(2 / 3) and diff["n"] == 3
    assert set(report.to_json(["worst"])["paired"]["all"]["minus worst"]) == {"perfect"}


def test_fact_tracing_errors_are_one_line():
    from tracinwe.evaluate.fact_tracing import evaluate_fact_tracing, recall_at_k, reciprocal_rank

    for call in (
        lambda: evaluate_fact_tracing({}, [[0]]),
        lambda: evaluate_fact_tracing({"m": np.zeros((1, 3))}, []),
        lambda: evaluate_fact_tracing({"m": np.zeros((2, 3))}, [[0]]),
        lambda: evaluate_fact_tracing({"m": np.zeros((1, 3))}, [[0]], subsets={"s": [True, False]}),
        lambda: reciprocal_rank([0.1, 0.2], []),
        lambda: reciprocal_rank([0.1, 0.2], [5]),
        lambda: reciprocal_rank([0.1, float("nan")], [0]),
        lambda: recall_at_k([0.1, 0.2], [0], k=0),
        lambda: evaluate_fact_tracing({"m": np.zeros((1, 3))}, [[0]]).paired("other"),
    ):
        with pytest.raises(TracInWEError) as info:
            call()
        assert "\n" not in str(info.value)


# -- tail patch ----------------------------------------------------------------------------------------------


def test_tail_patch_is_one_sgd_step_to_first_order_and_restores_the_weights(bpe):
    from tracinwe.evaluate.tail_patch import tail_patch

    model = tiny_gpt2(bpe, 0, tied=False)
    lm = CausalLanguageModel(model, bpe, max_length=64)
    before = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    lr = 1e-4
    result = tail_patch(lm, TRAIN, QUERIES, {"a": [[0, 1], [2, 4]], "b": [[3, 4], [1, 2]]}, learning_rate=lr)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    q = per_example_grads(lm, QUERIES, params)
    x = per_example_grads(lm, TRAIN, params)
    first_order = lr * (q @ x.T).numpy()  # d log p(query) = -lr grad loss(doc) . grad(-loss(query))
    for (i, d), change in result.pair_changes.items():
        assert change == pytest.approx(first_order[i, d], rel=0.05, abs=5e-3 * np.abs(first_order).max())
    assert result.per_query["a"][1] == pytest.approx(np.mean([result.pair_changes[(1, 2)], result.pair_changes[(1, 4)]]))
    assert result.k == 2 and len(result.pair_changes) == 7  # (0,0) (0,1) (1,2) (1,4) (0,3) (0,4) (1,1)
    assert result.summary()["a"]["n"] == 2 and "mean" in result.paired("a", "b")


def test_a_step_on_the_document_stating_the_fact_raises_it_more_than_an_unrelated_one(tmp_path):
    from tracinwe.evaluate.tail_patch import tail_patch
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    docs = CORPUS + ["Osk Brin was born in Oslo .", "the sea was calm and the boats came home ."]
    run = train_decoder(docs, None, DecoderConfig(n_layer=1, n_embd=32, n_head=2, vocab_size=300, epochs=20, batch_size=4,
                                                   learning_rate=5e-3, max_length=32, n_positions=32))
    lm = CausalLanguageModel(run.model.eval(), run.tokenizer, max_length=32)
    query = [{"prompt": "Varno Teliset was born in", "completion": " Lisbon"}]
    stating, unrelated = docs.index("Varno Teliset was born in Lisbon ."), docs.index("rain fell on the town all night long .")
    result = tail_patch(lm, docs, query, {"stating": [[stating]], "unrelated": [[unrelated]]}, learning_rate=1e-3)
    assert result.per_query["stating"][0] > 0
    assert result.per_query["stating"][0] > result.per_query["unrelated"][0] + 0.1  # measured: +0.35 against +0.02


def test_tail_patch_errors_are_one_line(bpe):
    from tracinwe.evaluate.tail_patch import tail_patch

    lm = CausalLanguageModel(tiny_gpt2(bpe, 0), bpe, max_length=64)
    for call in (
        lambda: tail_patch(lm, TRAIN, [], {"a": []}, 0.1),
        lambda: tail_patch(lm, TRAIN, QUERIES, {}, 0.1),
        lambda: tail_patch(lm, TRAIN, QUERIES, {"a": [[0]]}, 0.1),
        lambda: tail_patch(lm, TRAIN, QUERIES, {"a": [[0], [9]]}, 0.1),
        lambda: tail_patch(lm, TRAIN, QUERIES, {"a": [[0], [1, 2]]}, 0.1),
        lambda: tail_patch(lm, TRAIN, QUERIES, {"a": [[0], [1]]}, 0.0),
    ):
        with pytest.raises(TracInWEError) as info:
            call()
        assert "\n" not in str(info.value)
