"""Small text classifiers that train in seconds on a CPU: the paper's evaluation models.

`TokenCNN` is the authors' own choice (a CNN over BERT token ids, trained from
scratch); `bert_small_config` gives the paper's BERT-small shape (2 layers,
hidden 128, 2 heads) on the MiniLM/BERT uncased vocabulary.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenCNN(nn.Module):
    """Embedding -> two 1-D convolutions -> masked max-pool -> linear."""

    def __init__(self, vocab_size: int, num_classes: int, dim: int = 128, channels: int = 128, kernel: int = 3,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=None)
        self.conv1 = nn.Conv1d(dim, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.classifier = nn.Linear(channels, num_classes)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled representation fed to the final linear layer (B, channels)."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_id).long()
        mask = attention_mask.unsqueeze(1).float()
        h = self.embed(input_ids).transpose(1, 2) * mask
        h = torch.relu(self.conv1(h)) * mask
        h = torch.relu(self.conv2(h)) * mask
        h = h.masked_fill(mask == 0, -1e4)
        return h.max(dim=2).values

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.features(input_ids, attention_mask))


def bert_small_config(num_labels: int, vocab_size: int = 30522, max_position_embeddings: int = 128):
    """The paper's BERT-small shape: 2 layers, hidden 128, 2 heads, intermediate 512."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=max_position_embeddings,
        num_labels=num_labels,
    )
