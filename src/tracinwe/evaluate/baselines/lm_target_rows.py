"""Sparse output-side TracIn for causal LMs: the output-embedding rows of a document's own tokens.

In a causal LM a completion's last token (the answer) is only ever a *target*, never an *input*, so
input-side TracIn-WE never sees its row. The **target-row gradient** of a document x at checkpoint c is

    G_out(x)[w] = sum_t (p_t[w] - 1[y_t = w]) h_t      over x's target positions t,

with ``h_t`` the input of the output layer (GPT-2: the final hidden state after ``ln_f``) and ``p_t`` the
softmax: exactly the loss gradient w.r.t. ``lm_head.weight`` restricted to the rows ``w`` kept (the dense
rest of the output gradient is dropped). No backward pass is needed: ``p`` and ``h`` come from a forward pass.

- ``target-rows`` (``include_input=False``): rows ``w`` = x's target tokens;
  ``score = sum_c lr_c sum_{w shared} G_out(train)[w] . G_out(test)[w]``.
- ``TracIn-WE+out`` (``include_input=True``): rows ``w`` = every token of x (inputs and targets), with
  ``G[w] = G_in[w] + G_out[w]`` (``G_in``: TracIn-WE's input-lookup rows from `tracinwe.lm`). For a tied
  embedding (GPT-2) this is the tied weight's gradient restricted to the document's own token rows; untied,
  it adds two gradients of different matrices row by row (a heuristic that keeps TracIn-WE's sparse,
  per-token structure). Scored over shared tokens like TracIn-WE; positive = proponent.

A bias of the output layer, if any, is not part of the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from tracinwe.capture.gradients import CaptureSettings
from tracinwe.capture.records import TokenGradients
from tracinwe.errors import TracInWEError
from tracinwe.evaluate.baselines.lm_baselines import _batches, _check, _models, head_inputs_and_logits
from tracinwe.models.causal_lm import LOSS_MASK, CausalLanguageModel, LMExample
from tracinwe.scoring.influence import tracin_matrix

__all__ = ["lm_target_row_scores", "output_row_gradients", "merged_records"]


def output_row_gradients(lm: CausalLanguageModel, examples: Sequence[LMExample], batch_size: int = 32,
                         all_tokens: bool = False) -> TokenGradients:
    """Per document, ``G_out[w]`` (float64) for its target tokens (``all_tokens``: every token it holds), ids sorted."""
    lm.module.eval()
    offsets, ids_out, rows_out = [0], [], []
    for _, batch in _batches(lm, examples, batch_size):
        hidden, logits = head_inputs_and_logits(lm, batch)
        device = hidden.device
        mask = batch[LOSS_MASK][:, 1:].to(device)
        input_ids = batch["input_ids"].to(device)
        for i in range(input_ids.shape[0]):
            m = mask[i]
            y = input_ids[i, 1:][m]
            if all_tokens:
                keep = batch["attention_mask"][i].to(device).bool()
                rows_for = torch.unique(input_ids[i][keep])
            else:
                rows_for = torch.unique(y)
            h = hidden[i, :-1][m].double()
            p = torch.softmax(logits[i, :-1][m].double(), dim=-1)
            error = p[:, rows_for] - (y[:, None] == rows_for[None, :]).double()  # (targets, rows)
            ids_out.append(rows_for.cpu())
            rows_out.append((error.T @ h).cpu())
            offsets.append(offsets[-1] + rows_for.numel())
    n = len(offsets) - 1
    return TokenGradients(torch.tensor(offsets, dtype=torch.long), torch.cat(ids_out).long(), torch.cat(rows_out),
                          torch.full((n,), -1, dtype=torch.long), torch.zeros(n, 1))


def merged_records(a: TokenGradients, b: TokenGradients) -> TokenGradients:
    """Per example and token, the sum of the two records' rows (union of their tokens, ids sorted), float64."""
    if len(a) != len(b) or a.dim != b.dim:
        raise TracInWEError(f"records of {len(a)} x {a.dim} and {len(b)} x {b.dim} cannot be merged: capture the same examples")
    owners = torch.cat([a.example_index, b.example_index])
    tokens = torch.cat([a.token_ids, b.token_ids])
    vocab = int(tokens.max()) + 1 if tokens.numel() else 1
    keys, inverse = torch.unique(owners * vocab + tokens, sorted=True, return_inverse=True)
    rows = torch.zeros(keys.numel(), a.dim, dtype=torch.float64)
    rows.index_add_(0, inverse, torch.cat([a.rows.double(), b.rows.double()]))
    counts = torch.bincount(keys // vocab, minlength=len(a))
    offsets = torch.zeros(len(a) + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts, 0)
    return TokenGradients(offsets, keys % vocab, rows, a.labels, a.logits)


def _records(lm: CausalLanguageModel, examples: Sequence[LMExample], batch_size: int, max_length: int,
             include_input: bool) -> TokenGradients:
    out = output_row_gradients(lm, examples, batch_size, all_tokens=include_input)
    if not include_input:
        return out
    from tracinwe.lm import lm_token_gradients

    settings = CaptureSettings(batch_size=batch_size, max_length=max_length)
    (inp,) = lm_token_gradients([lm], examples, settings)
    return merged_records(inp.to("cpu"), out)


def lm_target_row_scores(
    checkpoints: Sequence[tuple[object, float]],
    train_examples: Sequence[LMExample],
    query_examples: Sequence[LMExample],
    max_length: int = 64,
    batch_size: int = 32,
    include_input: bool = False,
    *,
    tokenizer=None,
    progress: bool = False,
) -> np.ndarray:
    """``target-rows`` (or ``TracIn-WE+out`` with ``include_input``): (n_query, n_train) float64, positive = proponent.

    ``checkpoints``: ``[(CausalLanguageModel or HF *ForCausalLM (with ``tokenizer``) or folder, lr), ...]``, as
    `tracinwe.lm.lm_tracin_scores` and the other LM baselines take them.
    """
    _check(train_examples, query_examples)
    if batch_size < 1:
        raise TracInWEError(f"batch_size must be at least 1, got {batch_size}")
    models, rates = _models(checkpoints, tokenizer, max_length)
    items = list(enumerate(models))
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="TracIn-WE+out" if include_input else "target rows")
    total = torch.zeros(len(query_examples), len(train_examples), dtype=torch.float64)
    for c, lm in items:
        queries = _records(lm, list(query_examples), batch_size, max_length, include_input)
        train = _records(lm, list(train_examples), batch_size, max_length, include_input)
        total += tracin_matrix([queries], [train], [rates[c]])
    return total.numpy()
