"""`TracInWE.explain_generation`: a completion's proponents and each generated token's supporting documents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracinwe import TracInWE
from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.lm import lm_tracin_scores


def documents() -> list[str]:
    animals = ["fox", "owl", "cat", "elk", "emu", "yak", "bee", "ant"]
    verbs = ["jumps", "flies", "naps", "runs", "hops", "sits", "hums", "digs"]
    places = ["fence", "barn", "wall", "hill", "road", "lake", "rose", "sand"]
    return [f"document {i} : the {w} {v} over the {u} ." for i, (w, v, u) in enumerate(zip(animals, verbs, places))]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300, epochs=6, batch_size=4,
                           learning_rate=3e-3, num_checkpoints=2, seed=0)
    return train_decoder(documents(), tmp_path_factory.mktemp("lm") / "run", config)


def test_given_completion_token_rows_sum_to_its_scores_and_name_their_documents(run):
    docs = documents()
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=64, batch_size=3)
    out = tw.explain_generation("document 5 : the yak", completion=" sits over the lake .", train=docs, k=3, words=None)
    example = {"prompt": "document 5 : the yak", "completion": " sits over the lake ."}
    expected = tw.scores(docs, None, [example], None)[0]
    scale = float(np.abs(expected).max())
    assert np.allclose(out.scores, expected, rtol=1e-5, atol=1e-6 * scale)
    assert np.allclose(out.token_scores.sum(0), out.scores, rtol=1e-4, atol=1e-6 * scale)  # tokens sum to the score
    checkpoints = [(tw.classifier(c), lr) for c, lr in enumerate(tw.learning_rates)]
    split = lm_tracin_scores(checkpoints, docs, [example]).target_token_scores(0)  # the lm.py path, row by row
    assert np.allclose(out.token_scores, split.scores.numpy(), rtol=1e-5, atol=1e-6 * scale)
    ids, targets = tw.final.token_ids(example)
    assert [t.position for t in out.tokens] == [p for p, m in enumerate(targets) if m] == split.positions
    assert [t.token_id for t in out.tokens] == [ids[p] for p in split.positions]
    assert out.proponents[0].index == 5 and out.proponents[0].score > 0  # the document the completion comes from
    assert [s.index for s in out.proponents] == np.argsort(-expected)[:3].tolist()
    assert [s.index for s in out.opponents] == np.argsort(expected)[:3].tolist()
    for t, token in enumerate(out.tokens):
        assert [s.index for s in token.supporters] == np.argsort(-out.token_scores[t], kind="stable")[:3].tolist()
        for s in token.supporters:  # each supporter's shared tokens sum to its score for this token
            assert s.score == pytest.approx(float(out.token_scores[t, s.index]))
            assert sum(w.contribution for w in s.words) == pytest.approx(s.score, rel=1e-4, abs=1e-6 * scale)
    for s in out.proponents + out.opponents:
        assert sum(w.contribution for w in s.words) == pytest.approx(s.score, rel=1e-4, abs=1e-6 * scale)


def test_generated_completion_is_the_greedy_continuation_and_is_explained(run):
    docs = documents()
    tw = TracInWE([(run.model, 3e-3)], tokenizer=run.tokenizer, max_length=64)
    out = tw.explain_generation("document 2 : the cat", max_new_tokens=4, train=docs, k=2)
    prompt_ids = run.tokenizer("document 2 : the cat", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        greedy = run.model(prompt_ids).logits[0, -1].argmax()  # the first generated token, by hand
    assert run.tokenizer.decode(greedy).strip() and out.completion.startswith(run.tokenizer.decode(greedy))
    assert 1 <= len(out.tokens) and out.token_scores.shape == (len(out.tokens), len(docs))
    assert np.allclose(out.token_scores.sum(0), out.scores, rtol=1e-4, atol=1e-6 * float(np.abs(out.scores).max()))
    assert all(len(s.words) <= 5 for s in out.proponents)


def test_explain_generation_errors_are_one_line(run, tokenizer):
    from conftest import tiny_bert

    tw = TracInWE([(run.model, 3e-3)], tokenizer=run.tokenizer, max_length=12)
    with pytest.raises(InputTextError, match=r"completion_texts\[0\]: a completion of \d+ tokens does not fit") as info:
        tw.explain_generation("document 1 :", completion=" the owl flies over the barn and the yak sits", train=documents())
    assert "\n" not in str(info.value)
    with pytest.raises(InputTextError, match=r"the prompt has \d+ tokens: with 8 new tokens it does not fit") as info:
        tw.explain_generation("document 1 : the owl flies over the barn", max_new_tokens=8, train=documents())
    assert "\n" not in str(info.value)
    classifier = TracInWE([(tiny_bert(0), 0.1)], tokenizer=tokenizer)
    with pytest.raises(TracInWEError, match="needs causal language model checkpoints"):
        classifier.explain_generation("a prompt", train=["a text"])
