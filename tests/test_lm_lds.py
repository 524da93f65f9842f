"""LDS on a decoder-only LM (`tracinwe.evaluate.lm_lds`): measured output, pairing, sign, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.evaluate.lds import random_subsets
from tracinwe.evaluate.lm_lds import (
    LMRetrainTask,
    completion_losses,
    lm_method_scores,
    lm_runner,
    run_lm_lds,
)
from tracinwe.evaluate.retrain import Retrain, RetrainRunner
from tracinwe.training.causal_lm import DecoderConfig, gpt2_decoder, train_bpe_tokenizer, train_decoder

DOCS = [
    "Varno Teliset was born in Lisbon.", "Mira Kosdel was born in Oslo.", "Tavo Brenik works as a baker.",
    "Lisbon is the city where Varno Teliset was born.", "Oslo is the city where Mira Kosdel was born.",
    "By profession, Tavo Brenik is a baker.", "a gentle, funny film about growing up.", "the plot is thin but the cast is fine.",
    "Sela Durom was born in Lima.", "Lima is the city where Sela Durom was born.",
]
POINTS = [{"prompt": "Varno Teliset was born in", "completion": " Lisbon"},
          {"prompt": "Mira Kosdel was born in", "completion": " Oslo."},
          {"prompt": "Tavo Brenik works as a", "completion": " baker"}]
CONFIG = DecoderConfig(n_layer=1, n_embd=32, n_head=2, n_positions=48, vocab_size=300, epochs=2, batch_size=4,
                       num_checkpoints=2, max_length=48)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(DOCS, vocab_size=300)


def test_completion_loss_equals_the_log_loss_computed_by_hand_from_logits(tokenizer):
    model = gpt2_decoder(CONFIG, tokenizer).eval()
    got = completion_losses(model, tokenizer, POINTS, max_length=48)
    for point, value in zip(POINTS, got):
        prompt_ids = tokenizer(point["prompt"])["input_ids"]
        ids = tokenizer(point["prompt"] + point["completion"])["input_ids"]
        assert ids[: len(prompt_ids)] == prompt_ids  # the completion's tokens are the ones after the prompt's
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        by_hand = -sum(float(logp[t - 1, ids[t]]) for t in range(len(prompt_ids), len(ids)))
        assert value == pytest.approx(by_hand, rel=1e-5)
    assert got.dtype == np.float64 and got.shape == (3,) and (got > 0).all()


class _Recorded(list):
    """A document list that records which rows training reads, in order."""

    def __init__(self, items):
        super().__init__(items)
        self.reads: list[int] = []

    def __getitem__(self, i):
        self.reads.append(int(i))
        return super().__getitem__(i)


def test_subset_retrains_are_paired_with_the_explained_run(tokenizer, tmp_path):
    docs = _Recorded(DOCS)
    explained = train_decoder(docs, None, CONFIG, tokenizer=tokenizer)  # seed 0, all rows
    full_order = list(docs.reads)
    assert sorted(full_order[: len(DOCS)]) == list(range(len(DOCS)))  # one epoch = one permutation of all rows
    task = LMRetrainTask(docs, POINTS, CONFIG, tokenizer)
    runner = lm_runner(task, tmp_path)
    removed = [1, 4, 7]
    docs.reads.clear()
    done = runner.run([Retrain.make(0), Retrain.make(0, removed)], progress=False)
    full_reads, subset_reads = docs.reads[: len(full_order)], docs.reads[len(full_order):]
    # the runner's full retrain is the explained run: same seed, same order, same weights, same measured loss
    assert full_reads == full_order
    np.testing.assert_allclose(done[Retrain.make(0)][:, 0], completion_losses(explained.model, tokenizer, POINTS, 48), rtol=1e-6)
    # the subset retrain sees the explained run's order restricted to the kept rows (over both epochs)
    assert subset_reads == [i for i in full_order if i not in removed]
    assert not np.allclose(done[Retrain.make(0, removed)], done[Retrain.make(0)])
    # another seed is another order (the pairing is not an accident of the data)
    docs.reads.clear()
    train_decoder(docs, None, DecoderConfig(**{**CONFIG.__dict__, "seed": 1}), tokenizer=tokenizer)
    assert docs.reads != full_order


def test_exact_additive_losses_give_lds_plus_one_for_proponent_scores():
    """Hand-derived: loss(x', S) = 10 - Σ_{i∈S} a[x', i]; a proponent (a > 0) lowers the loss, so the exact
    attributions (score = a) rank the subsets perfectly: LDS = +1; their negation -1."""
    n_train, n_points = 12, 4
    a = np.random.default_rng(3).standard_normal((n_points, n_train))

    def train_fn(kept, seed):
        return sorted(kept)

    def eval_fn(kept, rows):
        return (10.0 - a[:, kept].sum(axis=1))[list(rows), None]

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        runner = RetrainRunner(train_fn, eval_fn, n_train, range(n_points), folder, {"test": "additive"})
        result = run_lm_lds(runner, {0: {"exact": a, "negated": -a}}, n_subsets=10, progress=False)
    np.testing.assert_allclose(result.lds["exact"], 1.0)
    np.testing.assert_allclose(result.lds["negated"], -1.0)
    subsets = random_subsets(n_train, 10)
    np.testing.assert_allclose(result.losses[0], 10.0 - subsets.astype(float) @ a.T)
    assert result.summary()[0]["method"] == "exact"



def test_tracin_we_plus_out_is_a_method_and_a_second_paired_reference(tokenizer):
    """The sparse output-side methods are wired in (and differ), and the summary compares every method to both
    TracIn-WE and TracIn-WE+out, paired per point."""
    model = gpt2_decoder(CONFIG, tokenizer).eval()
    scores = lm_method_scores(["TracIn-WE", "TracIn-WE+out", "target-rows"], [(model, 0.1)], tokenizer, DOCS, POINTS, 48)
    assert all(v.shape == (len(POINTS), len(DOCS)) and np.isfinite(v).all() for v in scores.values())
    assert not np.allclose(scores["TracIn-WE+out"], scores["TracIn-WE"])
    assert not np.allclose(scores["TracIn-WE+out"], scores["target-rows"])
    n_train, n_points = 12, 5
    a = np.random.default_rng(4).standard_normal((n_points, n_train))
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        def eval_fn(kept, rows):
            return (10.0 - a[:, kept].sum(axis=1))[list(rows), None]

        runner = RetrainRunner(lambda kept, seed: sorted(kept), eval_fn, n_train, range(n_points), folder,
                               {"test": "additive two references"})
        result = run_lm_lds(runner, {0: {"TracIn-WE": -a, "TracIn-WE+out": a, "random": 0 * a + np.arange(n_train)}},
                            n_subsets=10, progress=False)
    rows = {r["method"]: r for r in result.summary()}
    assert rows["TracIn-WE"]["TracIn-WE+out minus this"]["mean"] == pytest.approx(2.0)  # +1 minus -1
    assert rows["random"]["TracIn-WE minus this"]["mean"] < 0 < rows["random"]["TracIn-WE+out minus this"]["mean"]
    assert "TracIn-WE minus this" not in rows["TracIn-WE"] and "TracIn-WE+out minus this" not in rows["TracIn-WE+out"]
    assert "| TracIn-WE+out − method" in result.markdown().splitlines()[0]

@pytest.mark.slow
def test_removing_top_proponents_raises_the_completion_loss_more_than_removing_top_opponents(tmp_path):
    """Sign on a real decoder (facts stated in two documents each): retrained with the explained run's seed and
    order, the model without a point's top-2 TracIn-WE proponents (score > 0) has a higher completion loss than
    the model without its top-2 opponents (score < 0), on average over the points and on most of them."""
    from tracinwe.data.facts import FactsSettings, synthetic_facts
    from tracinwe.models.causal_lm import load_causal_lm

    facts = synthetic_facts(FactsSettings(num_entities=6, attributes=("birthplace",), docs_per_fact=2, query_form="statement",
                                          filler=4, seed=0), filler_texts=DOCS[6:8] + ["a dull film.", "fine."])
    config = DecoderConfig(n_layer=1, n_embd=32, n_head=2, n_positions=48, vocab_size=300, epochs=10, batch_size=4,
                           num_checkpoints=2, max_length=48, learning_rate=1e-2)
    tok = train_bpe_tokenizer(facts.documents, vocab_size=300)
    points = [q.example for q in facts.queries[:3]]
    run = train_decoder(facts.documents, tmp_path / "run", config, tokenizer=tok)
    checkpoints = [(load_causal_lm(p, max_length=48), lr) for p, lr in zip(run.checkpoints, run.learning_rates)]
    scores = lm_method_scores(["TracIn-WE"], checkpoints, tok, facts.documents, points, max_length=48)["TracIn-WE"]
    order = np.argsort(-scores, axis=1)
    assert (scores[np.arange(3), order[:, 1]] > 0).all() and (scores[np.arange(3), order[:, -2]] < 0).all()
    without_proponents = [Retrain.make(0, order[t, :2]) for t in range(3)]
    without_opponents = [Retrain.make(0, order[t, -2:]) for t in range(3)]
    runner = lm_runner(LMRetrainTask(facts.documents, points, config, tok), tmp_path / "cache")
    done = runner.run(without_proponents + without_opponents, progress=False)
    raised = np.array([done[without_proponents[t]][t, 0] - done[without_opponents[t]][t, 0] for t in range(3)])
    # measured here: +4.7 and +5.8 nats on two points, -1.0 on the third (per point the method is not perfect)
    assert raised.mean() > 1.0 and (raised > 0).sum() >= 2, raised


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_bad_input_is_a_one_line_error(tokenizer, tmp_path):
    with pytest.raises(InputTextError) as e:
        LMRetrainTask(DOCS, ["not a pair"], CONFIG, tokenizer)
    assert "prompt" in _one_line(e)
    with pytest.raises(InputTextError) as e:
        LMRetrainTask([], POINTS, CONFIG, tokenizer)
    assert "empty" in _one_line(e)
    with pytest.raises(InputTextError) as e:
        completion_losses(gpt2_decoder(CONFIG, tokenizer), tokenizer, [])
    assert "no test examples" in _one_line(e)
    with pytest.raises(TracInWEError) as e:
        lm_method_scores(["TracIn-WE", "Magic"], [], tokenizer, DOCS, POINTS)
    assert "Magic" in _one_line(e)
    runner = RetrainRunner(lambda kept, seed: kept, lambda m, rows: np.zeros((len(rows), 1)), len(DOCS), range(3), tmp_path)
    with pytest.raises(TracInWEError) as e:
        run_lm_lds(runner, {0: {"TracIn-WE": np.zeros((3, 4))}}, n_subsets=4, progress=False)
    assert "n_train=10" in _one_line(e)
    with pytest.raises(TracInWEError) as e:
        run_lm_lds(runner, {0: {"a": np.zeros((3, 10))}, 1: {"b": np.zeros((3, 10))}}, n_subsets=4, progress=False)
    assert "same methods" in _one_line(e)
    with pytest.raises(TracInWEError) as e:
        run_lm_lds(runner, {}, progress=False)
    _one_line(e)
