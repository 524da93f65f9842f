"""TracInCheckpointCallback on a causal-LM HuggingFace Trainer run: its checkpoints are TracIn checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from tracinwe.lm import lm_tracin_scores
from tracinwe.models.checkpoints import CHECKPOINT_INFO_FILE, read_learning_rate
from tracinwe.training.callback import TracInCheckpointCallback
from tracinwe.training.causal_lm import DecoderConfig, gpt2_decoder, load_causal_lm, train_bpe_tokenizer

DOCS = [
    "the cat sat on the mat .",
    "a dog ran in the park and the cat watched .",
    "Q: Where was Varno Teliset born? A: Lisbon",
    "rain fell on the town all night long .",
]


def test_callback_records_learning_rates_of_a_causal_lm_trainer_run(tmp_path):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    tokenizer = train_bpe_tokenizer(DOCS * 2, vocab_size=300, min_frequency=1)
    model = gpt2_decoder(DecoderConfig(n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0), tokenizer)
    dataset = [{"input_ids": tokenizer(d)["input_ids"]} for d in DOCS * 4]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, save_steps=2, save_strategy="steps", per_device_train_batch_size=4,
        learning_rate=2e-3, lr_scheduler_type="constant", logging_steps=1, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True,
    )
    callback = TracInCheckpointCallback()
    trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[callback])
    trainer.train()
    folders = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in folders] == ["checkpoint-2", "checkpoint-4"]
    assert [str(p) for p in folders] == callback.saved
    for folder in folders:
        info = json.loads((folder / CHECKPOINT_INFO_FILE).read_text())
        assert info["learning_rate"] == pytest.approx(2e-3) and read_learning_rate(folder) == pytest.approx(2e-3)
    checkpoints = [(load_causal_lm(f, max_length=64), read_learning_rate(f)) for f in folders]
    result = lm_tracin_scores(checkpoints, DOCS, [{"prompt": "Q: Where was Varno Teliset born? A:", "completion": " Lisbon"}])
    assert result.scores.shape == (1, len(DOCS)) and torch.isfinite(result.scores).all()
    assert result.top(0, k=1)[0] == [2]  # the document that states the answer
