"""TracIn-WE for decoder-only LMs: the exact input-side oracle on a tiny GPT-2, masking, sign, errors."""

from __future__ import annotations

import pytest
import torch

from tracinwe.capture.gradients import CaptureSettings
from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.lm import lm_token_gradients, lm_tracin_scores
from tracinwe.models.causal_lm import CausalLanguageModel, as_causal_lm

CORPUS = [
    "the cat sat on the mat .",
    "a dog ran in the park and the cat watched .",
    "Q: Where was Varno Teliset born? A: Lisbon",
    "the river runs past the old mill to the sea .",
    "Q: What is the job of Mira Osk? A: baker",
    "rain fell on the town all night long .",
]
TRAIN = [
    "the cat sat on the mat .",
    {"prompt": "Q: Where was Varno Teliset born? A:", "completion": " Lisbon"},
    "a dog ran in the park and the cat watched .",
    {"prompt": "Q: What is the job of Mira Osk? A:", "completion": " baker"},
    "rain fell on the town all night long .",
]
TEST = [
    {"prompt": "Q: Where was Mira Osk born? A:", "completion": " Lisbon"},
    "the cat ran in the park .",
]


@pytest.fixture(scope="module")
def bpe():
    from tracinwe.training.causal_lm import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS * 3, vocab_size=400, min_frequency=1)


def tiny_gpt2(tokenizer, seed: int, tied: bool = True, n_embd: int = 32):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=n_embd, n_head=2, vocab_size=len(tokenizer), n_positions=64,
                        tie_word_embeddings=tied, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def dense_lookup_gradient(model, ids: list[int], targets: list[bool]) -> torch.Tensor:
    """V x d: d(summed target loss)/d(lookup output), scattered into vocabulary rows, by plain autograd.

    The loss is HF's own (mean over labels != -100) times the number of targets.
    """
    ids_t = torch.tensor(ids)
    lookup = model.get_input_embeddings()(ids_t[None]).detach().requires_grad_(True)
    labels = torch.where(torch.tensor(targets), ids_t, torch.full_like(ids_t, -100))
    out = model(inputs_embeds=lookup, labels=labels[None])
    (grad,) = torch.autograd.grad(out.loss * int(sum(targets[1:])), lookup)
    dense = torch.zeros(model.get_input_embeddings().weight.shape, dtype=torch.float64)
    dense.index_add_(0, ids_t, grad[0].double())
    return dense


def brute_force_scores(checkpoints, train, test) -> torch.Tensor:
    out = torch.zeros(len(test), len(train), dtype=torch.float64)
    for lm, lr in checkpoints:
        g_train = [dense_lookup_gradient(lm.module, *lm.token_ids(x)) for x in train]
        g_test = [dense_lookup_gradient(lm.module, *lm.token_ids(x)) for x in test]
        for i, gt in enumerate(g_test):
            for j, gr in enumerate(g_train):
                out[i, j] += lr * float((gt * gr).sum())
    return out


@pytest.mark.parametrize("tied", [True, False])
def test_scores_equal_dense_autograd_at_the_lookup_output(bpe, tied):
    checkpoints = [(CausalLanguageModel(tiny_gpt2(bpe, seed, tied), bpe, max_length=64), lr)
                   for seed, lr in ((0, 0.3), (1, 0.1))]
    result = lm_tracin_scores(checkpoints, TRAIN, TEST, settings=CaptureSettings(batch_size=2))
    expected = brute_force_scores(checkpoints, TRAIN, TEST)
    scale = expected.abs().max()
    assert scale > 0
    assert torch.allclose(result.scores, expected, rtol=1e-4, atol=1e-5 * float(scale))
    for i in range(len(TEST)):  # per-token contributions sum to the score
        for j in range(len(TRAIN)):
            total = sum(result.token_contributions(i, j).values())
            assert total == pytest.approx(float(result.scores[i, j]), abs=1e-6 * float(scale))


def test_target_token_rows_sum_to_the_score_and_each_equals_its_own_loss_gradient(bpe):
    checkpoints = [(CausalLanguageModel(tiny_gpt2(bpe, seed), bpe, max_length=64), lr) for seed, lr in ((0, 0.3), (1, 0.1))]
    result = lm_tracin_scores(checkpoints, TRAIN, TEST)
    for i, example in enumerate(TEST):
        split = result.target_token_scores(i, CaptureSettings(batch_size=3))
        ids, targets = checkpoints[0][0].token_ids(example)
        assert split.positions == [p for p, t in enumerate(targets) if t] and split.token_ids == [ids[p] for p in split.positions]
        scale = float(result.scores[i].abs().max())
        assert torch.allclose(split.scores.sum(0), result.scores[i], rtol=1e-4, atol=1e-6 * scale)
    # the last target token's row by brute force: a loss on that token only
    ids, targets = checkpoints[0][0].token_ids(TEST[1])
    only_last = [False] * (len(ids) - 1) + [True]
    expected = torch.zeros(len(TRAIN), dtype=torch.float64)
    for lm, lr in checkpoints:
        g_test = dense_lookup_gradient(lm.module, ids, only_last)
        for j, x in enumerate(TRAIN):
            expected[j] += lr * float((g_test * dense_lookup_gradient(lm.module, *lm.token_ids(x))).sum())
    assert torch.allclose(split.scores[-1], expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_tied_weight_gradient_is_dense_but_the_lookup_gradient_is_not(bpe):
    """With tied embeddings weight.grad includes the output softmax; the score must not use it."""
    lm = CausalLanguageModel(tiny_gpt2(bpe, 0, tied=True), bpe)
    ids, targets = lm.token_ids(TRAIN[0])
    lookup = dense_lookup_gradient(lm.module, ids, targets)
    assert set(lookup.abs().sum(1).nonzero().flatten().tolist()) <= set(ids)
    weight = lm.module.get_input_embeddings().weight
    labels = torch.where(torch.tensor(targets), torch.tensor(ids), torch.tensor(-100))
    loss = lm.module(input_ids=torch.tensor([ids]), labels=labels[None]).loss * int(sum(targets[1:]))
    (weight_grad,) = torch.autograd.grad(loss, weight)
    assert int((weight_grad.abs().sum(1) > 0).sum()) > len(set(ids)) * 5  # dense over the vocabulary
    records = lm_token_gradients([lm], [TRAIN[0]])[0]
    assert records.token_ids.tolist() == sorted(set(ids))


def test_untied_weight_gradient_equals_the_scattered_lookup_gradient(bpe):
    lm = CausalLanguageModel(tiny_gpt2(bpe, 2, tied=False), bpe)
    ids, targets = lm.token_ids(TRAIN[1])
    weight = lm.module.get_input_embeddings().weight
    labels = torch.where(torch.tensor(targets), torch.tensor(ids), torch.tensor(-100))
    with torch.enable_grad():
        weight.requires_grad_(True)
        loss = lm.module(input_ids=torch.tensor([ids]), labels=labels[None]).loss * int(sum(targets[1:]))
        (weight_grad,) = torch.autograd.grad(loss, weight)
    assert torch.allclose(weight_grad.double(), dense_lookup_gradient(lm.module, ids, targets), atol=1e-6)


def test_completion_mask_covers_the_completion_and_prompt_tokens_get_gradient(bpe):
    lm = CausalLanguageModel(tiny_gpt2(bpe, 0), bpe)
    pair = {"prompt": "Q: Where was Varno Teliset born? A:", "completion": " Lisbon"}
    ids, targets = lm.token_ids(pair)
    completion_ids = bpe(" Lisbon", add_special_tokens=False)["input_ids"]
    assert [t for t, m in zip(ids, targets) if m] == completion_ids
    assert ids[-len(completion_ids):] == completion_ids
    text_ids, text_targets = lm.token_ids(pair["prompt"] + pair["completion"])
    assert text_ids == ids and text_targets == [False] + [True] * (len(ids) - 1)
    masked, full = lm_token_gradients([lm], [pair, pair["prompt"] + pair["completion"]])[0].select([0]), None
    full = lm_token_gradients([lm], [pair["prompt"] + pair["completion"]])[0]
    assert not torch.allclose(masked.rows, full.rows)  # a completion-only loss is another loss
    prompt_only = set(ids[: -len(completion_ids)]) - set(completion_ids)
    by_token = dict(zip(masked.token_ids.tolist(), masked.rows))
    assert prompt_only and all(float(by_token[t].norm()) > 0 for t in prompt_only)
    # the summed completion loss is HF's mean loss times the number of completion tokens
    batch = lm.tokenize([pair])
    labels = torch.where(batch["loss_mask"], batch["input_ids"], torch.tensor(-100))
    with torch.no_grad():
        hf = lm.module(input_ids=batch["input_ids"], labels=labels).loss * len(completion_ids)
        ours = lm.batch_losses(batch, None)[0]
    assert float(ours[0]) == pytest.approx(float(hf), rel=1e-5)


def test_a_step_on_a_training_document_moves_the_test_loss_by_minus_step_times_score(bpe):
    """Sign: positive = proponent. One SGD step on the (untied) word embeddings, first order."""
    lm = CausalLanguageModel(tiny_gpt2(bpe, 3, tied=False), bpe)
    with torch.no_grad():
        lm.module.get_input_embeddings().weight.normal_(0, 0.3)
    train, test = TRAIN[2], TEST[1]
    score = float(lm_tracin_scores([(lm, 1.0)], [train], [test]).scores[0, 0])

    def loss_of(example) -> float:
        with torch.no_grad():
            return float(lm.batch_losses(lm.tokenize([example]), None)[0][0])

    step = 1e-3 / max(abs(score), 1e-9) ** 0.5
    ids, targets = lm.token_ids(train)
    before = loss_of(test)
    gradient = dense_lookup_gradient(lm.module, ids, targets).float()
    with torch.no_grad():
        lm.module.get_input_embeddings().weight -= step * gradient
    assert loss_of(test) - before == pytest.approx(-step * score, rel=0.05)


def test_a_duplicate_of_the_test_document_is_its_top_proponent():
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    animals = ["fox", "owl", "cat", "elk", "emu", "yak", "bee", "ant"]
    verbs = ["jumps", "flies", "naps", "runs", "hops", "sits", "hums", "digs"]
    places = ["fence", "barn", "wall", "hill", "road", "lake", "rose", "sand"]
    docs = [f"document {i} : the {w} {v} over the {u} ." for i, (w, v, u) in enumerate(zip(animals, verbs, places))]
    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300, epochs=5, batch_size=4,
                           learning_rate=3e-3, num_checkpoints=1, seed=0)
    run = train_decoder(docs, folder=None, config=config)
    lm = CausalLanguageModel(run.model, run.tokenizer, max_length=64)
    test = [docs[3], {"prompt": "document 5 : the yak", "completion": " sits over the lake ."}]
    result = lm_tracin_scores([(lm, config.learning_rate)], docs, test)
    assert result.top(0, k=1)[0] == [3]
    assert result.top(1, k=1)[0] == [5]


def test_trained_decoder_is_seeded_and_its_checkpoints_load(tmp_path):
    from tracinwe.models.checkpoints import read_learning_rate
    from tracinwe.training.causal_lm import DecoderConfig, load_causal_lm, train_decoder

    docs = CORPUS * 2
    config = DecoderConfig(n_embd=32, n_positions=64, vocab_size=300, epochs=2, batch_size=4, num_checkpoints=2, seed=1)
    a = train_decoder(docs, tmp_path / "run", config)
    b = train_decoder(docs, None, config)
    assert a.losses == b.losses
    assert [p.name for p in a.checkpoints] == ["checkpoint-3", "checkpoint-6"]  # 12 documents, batches of 4, 2 epochs
    assert [read_learning_rate(p) for p in a.checkpoints] == [config.learning_rate] * 2
    loaded = load_causal_lm(a.checkpoints[-1], max_length=64)
    live = CausalLanguageModel(a.model, a.tokenizer, max_length=64)
    assert torch.allclose(lm_tracin_scores([(loaded, 1.0)], TRAIN, TEST).scores,
                          lm_tracin_scores([(live, 1.0)], TRAIN, TEST).scores, rtol=1e-5, atol=1e-7)


def test_chat_messages_use_the_chat_template(bpe):
    lm = CausalLanguageModel(tiny_gpt2(bpe, 0), bpe)
    chat = [{"role": "user", "content": "Where was Varno Teliset born?"}, {"role": "assistant", "content": "Lisbon"}]
    with pytest.raises(InputTextError, match="chat template"):
        lm.token_ids(chat)
    bpe.chat_template = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        ids, targets = lm.token_ids(chat)
        target_text = bpe.decode([t for t, m in zip(ids, targets) if m])
        assert target_text.strip() == "Lisbon"
        ids, targets = lm.token_ids(chat[:1])
        assert targets == [False] + [True] * (len(ids) - 1)
    finally:
        bpe.chat_template = None


def test_bad_inputs_get_one_line_errors(bpe, tokenizer):
    lm = CausalLanguageModel(tiny_gpt2(bpe, 0), bpe, max_length=8)
    cases = [
        ({"prompt": "Q: a?", "completion": "  "}, "empty"),
        ({"prompt": "Q: a?", "completion": " the cat sat on the mat and the dog ran in the park"}, "max_length"),
        ("", "empty"),
        ({"question": "x"}, "prompt"),
        (3, "must be a string"),
    ]
    for example, words in cases:
        with pytest.raises(InputTextError, match=words) as info:
            lm.tokenize([example])
        assert "\n" not in str(info.value)
    from conftest import tiny_bert

    with pytest.raises(TracInWEError, match="not a causal language model"):
        as_causal_lm(tiny_bert(0), tokenizer)
    with pytest.raises(InputTextError, match="no labels"):
        lm.label_id(1)


def test_a_classifier_checkpoint_is_not_loaded_as_a_causal_lm(tmp_path, tokenizer):
    from conftest import tiny_bert
    from tracinwe.errors import CheckpointError
    from tracinwe.training.causal_lm import load_causal_lm

    tiny_bert(0).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a causal language model") as info:
        load_causal_lm(tmp_path)
    assert "\n" not in str(info.value)
