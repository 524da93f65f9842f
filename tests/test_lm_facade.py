"""`TracInWE` on decoder-only LMs: equal to `lm_tracin_scores` and to a dense input-side oracle, loss masks, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_causal_lm import CORPUS
from tracinwe import TracInWE
from tracinwe.errors import CheckpointError, InputTextError, LabelError, TracInWEError
from tracinwe.lm import lm_tracin_scores
from tracinwe.models.causal_lm import CausalLanguageModel

PAIR = {"prompt": "Q: Where was Varno Teliset born? A:", "completion": " Lisbon"}
TRAIN = [
    "the cat sat on the mat .",
    PAIR,
    "a dog ran in the park and the cat watched .",
    {"prompt": "Q: What is the job of Mira Osk? A:", "completion": " baker"},
    "rain fell on the town all night long .",
]
TEST = [{"prompt": "Q: Where was Mira Osk born? A:", "completion": " Lisbon"}, "the cat ran in the park ."]


@pytest.fixture(scope="module")
def bpe():
    from tracinwe.training.causal_lm import train_bpe_tokenizer

    return train_bpe_tokenizer(CORPUS * 3, vocab_size=400, min_frequency=1)


def gpt2(tokenizer, seed: int, tied: bool = True):
    """A random-init 2-layer GPT-2 (width 32) with spread word embeddings, in eval mode."""
    from tracinwe.training.causal_lm import DecoderConfig, gpt2_decoder

    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, tie_word_embeddings=tied, seed=seed)
    model = gpt2_decoder(config, tokenizer)
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.3)
    return model.eval()


def hand_targets(tokenizer, example) -> tuple[list[int], list[bool]]:
    """Ids and target mask worked out by hand: a text predicts every token after the first; a pair only the
    completion's tokens (the pairs here split at a word boundary, so the ids are prompt ids + completion ids)."""
    if isinstance(example, str):
        ids = tokenizer(example)["input_ids"]
        return ids, [False] + [True] * (len(ids) - 1)
    prompt = tokenizer(example["prompt"])["input_ids"]
    completion = tokenizer(example["completion"])["input_ids"]
    assert tokenizer(example["prompt"] + example["completion"])["input_ids"] == prompt + completion
    return prompt + completion, [False] * len(prompt) + [True] * len(completion)


def input_side_gradient(model, ids: list[int], targets: list[bool]) -> torch.Tensor:
    """V x d gradient of the summed target NLL with respect to a copy of the word-embedding matrix that feeds
    the input lookup only (one-hot @ E): the output head of a tied model keeps the original weight."""
    weight = model.get_input_embeddings().weight.detach().clone().requires_grad_(True)
    ids_t = torch.tensor(ids)
    one_hot = torch.nn.functional.one_hot(ids_t, weight.shape[0]).float()
    with torch.enable_grad():
        logits = model(inputs_embeds=(one_hot @ weight)[None]).logits[0]
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        loss = -sum(log_probs[t - 1, ids[t]] for t in range(1, len(ids)) if targets[t])
        (grad,) = torch.autograd.grad(loss, weight)
    return grad.double()


def oracle_scores(models, rates, tokenizer, train, test, targets=hand_targets) -> torch.Tensor:
    out = torch.zeros(len(test), len(train), dtype=torch.float64)
    for model, lr in zip(models, rates):
        g_train = [input_side_gradient(model, *targets(tokenizer, x)) for x in train]
        g_test = [input_side_gradient(model, *targets(tokenizer, x)) for x in test]
        for i, a in enumerate(g_test):
            for j, b in enumerate(g_train):
                out[i, j] += lr * float((a * b).sum())
    return out


def close(actual, expected, rtol: float = 1e-4) -> bool:
    actual, expected = torch.as_tensor(np.asarray(actual)), torch.as_tensor(np.asarray(expected))
    scale = float(expected.abs().max())
    return scale > 0 and torch.allclose(actual, expected, rtol=rtol, atol=1e-5 * scale)


@pytest.mark.parametrize("tied", [True, False])
def test_facade_equals_lm_tracin_scores_and_the_dense_input_side_oracle(bpe, tied):
    models, rates = [gpt2(bpe, 0, tied), gpt2(bpe, 1, tied)], [0.3, 0.1]
    tw = TracInWE(list(zip(models, rates)), tokenizer=bpe, max_length=64, batch_size=2)
    assert tw.is_causal_lm and tw.task == "causal-lm"  # detected from the GPT2LMHeadModel class
    scores = tw.scores(TRAIN, None, TEST, None)
    assert scores.shape == (len(TEST), len(TRAIN))
    expected = oracle_scores(models, rates, bpe, TRAIN, TEST)
    assert close(scores, expected)
    assert close(scores, lm_tracin_scores(list(zip(models, rates)), TRAIN, TEST, tokenizer=bpe).scores, rtol=1e-6)
    forced = TracInWE([(CausalLanguageModel(m, bpe, 64), r) for m, r in zip(models, rates)], task="causal-lm")
    assert close(forced.scores(TRAIN, None, TEST, None), scores, rtol=1e-6)
    diagonal = torch.diagonal(oracle_scores(models, rates, bpe, TRAIN, TRAIN))
    assert close(tw.self_influence(TRAIN), diagonal)
    top = tw.top_influences(TRAIN, None, TEST, None, k=2)
    assert top.proponent_indices.tolist() == np.argsort(-expected.numpy(), axis=1)[:, :2].tolist()


def test_completion_loss_differs_from_full_text_loss_by_the_prompt_tokens_loss(bpe):
    """Losses add over target tokens: score(prompt + completion as text) - score(pair) is the score of the loss on
    the prompt's own tokens after the first, and no completion-only gradient equals the full-text one."""
    models, rates = [gpt2(bpe, 2), gpt2(bpe, 3)], [0.2, 0.05]
    tw = TracInWE(list(zip(models, rates)), tokenizer=bpe, max_length=64)
    query = dict(PAIR)  # PAIR itself is a training document (with its completion-only loss)
    full_text = query["prompt"] + query["completion"]
    scores = tw.scores(TRAIN, None, [query, full_text], None)
    n_prompt = len(bpe(PAIR["prompt"])["input_ids"])
    ids, _ = hand_targets(bpe, PAIR)

    def prompt_only(tokenizer, example):
        if example is query:
            return ids, [False] + [True] * (n_prompt - 1) + [False] * (len(ids) - n_prompt)
        return hand_targets(tokenizer, example)

    prompt_part = oracle_scores(models, rates, bpe, TRAIN, [query], prompt_only)[0]
    assert close(scores[1] - scores[0], prompt_part)
    assert float(prompt_part.abs().max()) > 0.05 * float(np.abs(scores).max())  # a real difference, not rounding
    masks = [tw.final.token_ids(x)[1] for x in (PAIR, full_text)]
    assert masks[0] == hand_targets(bpe, PAIR)[1] and masks[1] == [False] + [True] * (len(ids) - 1)


def test_word_contributions_sum_to_the_score_and_are_shared_tokens(bpe):
    tw = TracInWE([(gpt2(bpe, 4), 0.3), (gpt2(bpe, 5), 0.1)], tokenizer=bpe, max_length=64)
    scores = tw.scores(TRAIN, None, TEST, None)
    for i, test in enumerate(TEST):
        for j, train in enumerate(TRAIN):
            words = tw.word_contributions(train, None, test)
            total = sum(w.contribution for w in words)
            assert total == pytest.approx(float(scores[i, j]), rel=1e-5, abs=1e-6 * float(np.abs(scores).max()))
            train_ids, test_ids = tw.final.token_ids(train)[0], tw.final.token_ids(test)[0]
            assert {w.token_id for w in words} <= set(train_ids) & set(test_ids)
            for w in words:
                assert [train_ids[p] for p in w.train_positions] == [w.token_id] * len(w.train_positions)
    magnitudes = [abs(w.contribution) for w in tw.word_contributions(TRAIN[2], None, TEST[1])]
    assert magnitudes == sorted(magnitudes, reverse=True) and len(magnitudes) >= 3  # "the", "cat", "park", ...


def test_chat_messages_go_through_the_chat_template(bpe):
    chat = [{"role": "user", "content": "Where was Varno Teliset born?"}, {"role": "assistant", "content": "Lisbon"}]
    models = [(gpt2(bpe, 6), 0.1)]
    tw = TracInWE(models, tokenizer=bpe, max_length=64)
    with pytest.raises(InputTextError, match=r"test_texts\[0\].*chat template") as info:
        tw.scores(TRAIN, None, [chat], None)
    assert "\n" not in str(info.value)
    bpe.chat_template = ("{% for m in messages %}<{{ m.role }}> {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        scores = tw.scores(TRAIN, None, [chat], None)
        assert close(scores, lm_tracin_scores(models, TRAIN, [chat], tokenizer=bpe).scores, rtol=1e-6)
        ids, targets = tw.final.token_ids(chat)
        assert bpe.decode([t for t, m in zip(ids, targets) if m]).strip() == "Lisbon"  # loss on the reply only
    finally:
        bpe.chat_template = None


def decoder_documents() -> list[str]:
    animals = ["fox", "owl", "cat", "elk", "emu", "yak", "bee", "ant"]
    verbs = ["jumps", "flies", "naps", "runs", "hops", "sits", "hums", "digs"]
    places = ["fence", "barn", "wall", "hill", "road", "lake", "rose", "sand"]
    return [f"document {i} : the {w} {v} over the {u} ." for i, (w, v, u) in enumerate(zip(animals, verbs, places))]


def test_a_training_document_is_the_top_proponent_of_its_own_completion_from_checkpoint_folders(tmp_path):
    from tracinwe.training.causal_lm import DecoderConfig, train_decoder

    docs = decoder_documents()
    config = DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=300, epochs=6, batch_size=4,
                           learning_rate=3e-3, num_checkpoints=2, seed=0)
    run = train_decoder(docs, tmp_path / "run", config)
    tw = TracInWE.from_checkpoints(run.checkpoints, max_length=64)  # detected from config.json; lr recorded beside it
    assert tw.is_causal_lm and tw.learning_rates == [config.learning_rate] * 2
    queries = [{"prompt": "document 5 : the yak", "completion": " sits over the lake ."}, docs[2]]
    top = tw.top_influences(docs, None, queries, None, k=1)
    assert top.proponent_indices[:, 0].tolist() == [5, 2]
    assert top.proponent_scores[0, 0] > 0
    in_memory = TracInWE([(run.model, config.learning_rate)], tokenizer=run.tokenizer, max_length=64)
    assert in_memory.scores(docs, None, queries, None).shape == (2, len(docs))


def test_trainer_checkpoints_take_their_learning_rate_from_trainer_state(tmp_path, bpe):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model = gpt2(bpe, 7)
    dataset = [{"input_ids": bpe(d)["input_ids"]} for d in CORPUS * 2]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, save_steps=1, save_strategy="steps", per_device_train_batch_size=4,
        learning_rate=2e-3, lr_scheduler_type="linear", logging_steps=1, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=dataset, processing_class=bpe,
            data_collator=DataCollatorForLanguageModeling(bpe, mlm=False)).train()
    folders = [tmp_path / "checkpoint-1", tmp_path / "checkpoint-2"]
    logged = []
    for folder in folders:
        state = json.loads((folder / "trainer_state.json").read_text())
        logged.append([e["learning_rate"] for e in state["log_history"] if "learning_rate" in e][-1])
    tw = TracInWE.from_checkpoints(folders, max_length=64)
    assert tw.is_causal_lm and tw.learning_rates == pytest.approx(logged) and logged[0] != logged[1]
    from tracinwe.training.causal_lm import load_causal_lm

    loaded = [(load_causal_lm(f, max_length=64), lr) for f, lr in zip(folders, logged)]
    assert close(tw.scores(TRAIN, None, TEST, None), lm_tracin_scores(loaded, TRAIN, TEST).scores, rtol=1e-6)


def one_line(error_type, match: str, call) -> None:
    with pytest.raises(error_type, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_lm_inputs_get_one_line_errors(bpe, tmp_path, tokenizer):
    from conftest import tiny_bert

    tw = TracInWE([(gpt2(bpe, 8), 0.1)], tokenizer=bpe, max_length=12)
    long_completion = {"prompt": "Q: a?", "completion": " the cat sat on the mat and the dog ran in the park"}
    long_text = "the cat sat on the mat and the dog ran in the park and the cat watched"
    one_line(InputTextError, r"train_texts\[1\]: the completion of .* is empty", lambda: tw.scores(
        ["the cat sat .", {"prompt": "Q: a?", "completion": "  "}], None, TEST, None))
    one_line(InputTextError, r"test_texts\[1\]: a completion of \d+ tokens does not fit max_length=12.*raise max_length",
             lambda: tw.scores(TRAIN[:1], None, ["the cat .", long_completion], None))
    one_line(InputTextError, r"train_texts\[0\]: a text of \d+ tokens does not fit max_length=12: split the document",
             lambda: tw.scores([long_text], None, ["the cat ."], None))
    one_line(LabelError, "train_labels were passed but a causal language model takes none",
             lambda: tw.scores(["the cat ."], [0], ["the cat ."], None))
    one_line(LabelError, "test_labels were passed", lambda: tw.scores(["the cat ."], None, ["the cat ."], [1]))
    one_line(LabelError, "labels were passed", lambda: tw.self_influence(["the cat ."], [0]))
    one_line(LabelError, "labels were passed", lambda: tw.word_contributions("the cat .", 0, "the cat ."))
    one_line(InputTextError, "no text pairs", lambda: tw.scores(["a cat ."], None, ["a cat ."], None, train_pairs=["x"]))
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    one_line(InputTextError, r"train_texts\[0\]: a chat message on its own .* list of messages",
             lambda: tw.scores(chat, None, ["a cat ."], None))  # one conversation passed as the training set
    one_line(CheckpointError, "GPT2LMHeadModel is a causal language model: pass task='causal-lm'",
             lambda: TracInWE([(gpt2(bpe, 8), 0.1)], tokenizer=bpe, task="classification"))
    # a classifier forced to be a causal LM: in memory and as a checkpoint folder
    one_line(CheckpointError, "BertForSequenceClassification is not a causal language model.*task='causal-lm'",
             lambda: TracInWE([(tiny_bert(0), 0.1)], tokenizer=tokenizer, task="causal-lm"))
    tiny_bert(0).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    one_line(CheckpointError, r"\(BertForSequenceClassification\) is not a causal language model",
             lambda: TracInWE.from_checkpoints([tmp_path / "bert"], learning_rates=[0.1], task="causal-lm"))
    one_line(CheckpointError, "mix causal language models and classifiers",
             lambda: TracInWE([(tiny_bert(0), 0.1), (gpt2(bpe, 8), 0.1)], tokenizer=tokenizer))
    one_line(TracInWEError, "task 'lm' is not one of", lambda: TracInWE([(gpt2(bpe, 8), 0.1)], tokenizer=bpe, task="lm"))
    classifier = TracInWE.from_checkpoints([tmp_path / "bert"], learning_rates=[0.1])  # detection keeps classifiers
    assert not classifier.is_causal_lm and classifier.task == "classification"


def test_a_folder_whose_config_names_no_architecture_loads_as_a_causal_lm_when_forced(bpe, tmp_path):
    model = gpt2(bpe, 9)
    model.save_pretrained(tmp_path / "lm")
    bpe.save_pretrained(tmp_path / "lm")
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    tw = TracInWE.from_checkpoints([tmp_path / "lm"], learning_rates=[0.1], max_length=64, task="causal-lm")
    assert tw.is_causal_lm and type(tw.final.module).__name__ == "GPT2LMHeadModel"
    in_memory = TracInWE([(model, 0.1)], tokenizer=bpe, max_length=64)
    assert close(tw.scores(TRAIN, None, TEST, None), in_memory.scores(TRAIN, None, TEST, None), rtol=1e-6)
