"""Baselines for attributing a causal LM's outputs to its training documents (fact tracing, LM LDS).

Every function returns an (n_query, n_train) float64 array, higher = more relevant / proponent:

- `bm25_scores`: lexical BM25 (the real ``bm25s`` package) between the documents' texts;
- `lm_last_layer_scores`: TracIn on the output projection (``lm_head``) only:
  ``sum_c lr_c <G_c(train), G_c(query)>`` with ``G(x) = sum_t (softmax_t - onehot_t) (x) h_t`` over the
  target positions (``h_t``: the input of the output layer, with a constant 1 appended when it has a bias).
  Computed without V x d matrices: ``<G(x), G(x')> = sum_{t,s} (h_t . h'_s) (e_t . e'_s)``. For GPT-2, whose
  ``lm_head`` is tied to the input embedding ``wte``, this is the *output-side* share of that weight's
  gradient only (the input-lookup share is TracIn-WE's);
- `lm_projected_gradient_scores`: TrackStar-like: per-example gradients of every Linear / Conv1D weight matrix
  (attention, MLP and ``lm_head``; as Bergson tracks them; biases, LayerNorms and the input lookups are left out),
  each projected by a seeded Gaussian Kronecker factor pair without materialising it
  (``P_in^T A^T D P_out`` from the layer's inputs ``A`` and output gradients ``D``), optionally normalised by
  an Adafactor-style factored AdamW second moment, unit-normalised, cosine summed over checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from tracinwe.errors import TracInWEError
from tracinwe.models.causal_lm import LOSS_MASK, CausalLanguageModel, LMExample, as_causal_lm, as_document

__all__ = ["bm25_scores", "lm_last_layer_scores", "lm_projected_gradient_scores", "load_second_moment", "tracked_layers"]


def _check(train: Sequence, queries: Sequence, what: str = "examples") -> None:
    if len(train) == 0:
        raise TracInWEError(f"no training {what}: pass at least one")
    if len(queries) == 0:
        raise TracInWEError(f"no query {what}: pass at least one")


def _text(example: LMExample) -> str:
    return example if isinstance(example, str) else as_document(example).text


# -- BM25 -----------------------------------------------------------------------------------------


def bm25_scores(train_texts: Sequence[str], query_texts: Sequence[str], stopwords: str | None = "en") -> np.ndarray:
    """BM25 (``bm25s``, Lucene variant, k1=1.5, b=0.75) of every query against every training text: (n_query, n_train).

    Texts may also be LM examples (a prompt/completion dict is its prompt + completion). ``stopwords="en"``
    drops English stop words on both sides (None keeps them).
    """
    import bm25s

    _check(train_texts, query_texts, "texts")
    train = [_text(t) for t in train_texts]
    queries = [_text(q) for q in query_texts]
    corpus_tokens = bm25s.tokenize(train, stopwords=stopwords, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    vocab = corpus_tokens.vocab
    out = np.zeros((len(queries), len(train)), dtype=np.float64)
    for i, tokens in enumerate(bm25s.tokenize(queries, stopwords=stopwords, return_ids=False, show_progress=False)):
        known = [t for t in tokens if t in vocab]
        if known:
            out[i] = retriever.get_scores(known)
    return out


# -- checkpoints ----------------------------------------------------------------------------------


def _models(checkpoints, tokenizer, max_length: int) -> tuple[list[CausalLanguageModel], list[float]]:
    if len(checkpoints) == 0:
        raise TracInWEError("no checkpoints: pass [(model, learning_rate), ...]")
    models, rates = [], []
    for item in checkpoints:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TracInWEError("a checkpoint is a (model, learning_rate) pair: pass [(model, lr), ...]")
        model, lr = item
        if isinstance(model, (str,)) or hasattr(model, "is_dir"):
            from tracinwe.models.causal_lm import load_causal_lm

            models.append(load_causal_lm(model, max_length=max_length))
        else:
            models.append(as_causal_lm(model, tokenizer, max_length=max_length))
        rates.append(float(lr))
    return models, rates


def _batches(lm: CausalLanguageModel, examples: Sequence[LMExample], batch_size: int):
    """(start, batch) over the examples in order, right-padded."""
    for lo in range(0, len(examples), batch_size):
        yield lo, lm.tokenize(list(examples[lo : lo + batch_size]))


# -- last layer ----------------------------------------------------------------------------------


def head_inputs_and_logits(lm: CausalLanguageModel, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The output layer's input ``h`` (B, T, d) and the logits (B, T, V) of a batch, without gradients."""
    head = lm.module.get_output_embeddings()
    seen: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    device = head.weight.device
    try:
        with torch.no_grad():
            logits = lm.module(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    finally:
        handle.remove()
    return seen[-1], logits


def _output_side(lm: CausalLanguageModel, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per target token: the output layer's input ``h`` (with 1 appended for a bias), ``softmax - onehot``, owner row."""
    head = lm.module.get_output_embeddings()
    device = head.weight.device
    head_inputs, logits = head_inputs_and_logits(lm, batch)
    mask = batch[LOSS_MASK][:, 1:].to(device)
    hidden = head_inputs[:, :-1][mask].double()
    if getattr(head, "bias", None) is not None:
        hidden = torch.cat([hidden, torch.ones(hidden.shape[0], 1, dtype=hidden.dtype, device=device)], dim=1)
    error = torch.softmax(logits[:, :-1][mask].double(), dim=-1)
    targets = batch["input_ids"][:, 1:].to(device)[mask]
    error[torch.arange(targets.numel(), device=device), targets] -= 1.0
    owner = mask.nonzero(as_tuple=True)[0]
    return hidden, error, owner


def _segment_matrix(owner: torch.Tensor, n: int) -> torch.Tensor:
    seg = torch.zeros(n, owner.numel(), dtype=torch.float64, device=owner.device)
    seg[owner, torch.arange(owner.numel(), device=owner.device)] = 1.0
    return seg


def lm_last_layer_scores(
    checkpoints: Sequence[tuple[object, float]],
    train_examples: Sequence[LMExample],
    query_examples: Sequence[LMExample],
    max_length: int = 64,
    batch_size: int = 32,
    *,
    tokenizer=None,
    progress: bool = False,
) -> np.ndarray:
    """TracIn on the output projection's weight (output side): (n_query, n_train), positive = proponent.

    ``checkpoints``: ``[(CausalLanguageModel or HF *ForCausalLM (with ``tokenizer``) or folder, lr), ...]``.
    Examples are strings (loss on every token after the first) or prompt/completion dicts (loss on the completion).
    """
    _check(train_examples, query_examples)
    models, rates = _models(checkpoints, tokenizer, max_length)
    total = np.zeros((len(query_examples), len(train_examples)), dtype=np.float64)
    for c, (lm, lr) in enumerate(zip(models, rates)):
        lm.module.eval()
        parts = [_output_side(lm, b) + (lo,) for lo, b in _batches(lm, query_examples, batch_size)]
        hq = torch.cat([p[0] for p in parts])
        eq = torch.cat([p[1] for p in parts])
        seg_q = _segment_matrix(torch.cat([p[2] + p[3] for p in parts]), len(query_examples))
        batches = _batches(lm, train_examples, batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=math.ceil(len(train_examples) / batch_size), desc=f"last layer {c + 1}/{len(models)}")
        for lo, batch in batches:
            hx, ex, owner = _output_side(lm, batch)
            gram = (hq @ hx.T) * (eq @ ex.T)  # (query tokens, train tokens)
            block = seg_q @ gram @ _segment_matrix(owner, batch["input_ids"].shape[0]).T
            total[:, lo : lo + block.shape[1]] += lr * block.cpu().numpy()
    return total


# -- TrackStar-like projected gradients ------------------------------------------------------------


def tracked_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The Linear / Conv1D (GPT-2) modules whose weight gradients the projected baseline tracks, in order."""
    out = []
    for name, mod in module.named_modules():
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ == "Conv1D":
            out.append((name, mod))
    return out


def _in_out(mod: torch.nn.Module) -> tuple[int, int]:
    w = mod.weight
    return (int(w.shape[1]), int(w.shape[0])) if isinstance(mod, torch.nn.Linear) else (int(w.shape[0]), int(w.shape[1]))


def load_second_moment(folder) -> dict[str, torch.Tensor]:
    """The AdamW second moment a decoder checkpoint saved (``DecoderConfig(save_second_moment=True)``)."""
    from pathlib import Path

    from tracinwe.training.causal_lm import SECOND_MOMENT_FILE

    path = Path(folder) / SECOND_MOMENT_FILE
    if not path.is_file():
        raise TracInWEError(f"no {SECOND_MOMENT_FILE} in {str(folder)!r}: train with DecoderConfig(save_second_moment=True)")
    return torch.load(path, map_location="cpu")


class _Projector:
    """Seeded Gaussian factors per tracked layer (identity on a side whose size fits its share), and factored normalisers."""

    def __init__(self, layers, dim: int, seed: int, moments: Mapping[str, torch.Tensor] | None, device) -> None:
        gen = torch.Generator().manual_seed(seed)
        share = max(1, dim // max(1, len(layers)))
        side = max(1, int(math.isqrt(share)))
        self.factors: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        self.scales: list[tuple[torch.Tensor | None, torch.Tensor | None]] = []
        for name, mod in layers:
            n_in, n_out = _in_out(mod)
            p_in = None if n_in <= side else (torch.randn(n_in, side, generator=gen, dtype=torch.float64) / math.sqrt(side))
            p_out = None if n_out <= side else (torch.randn(n_out, side, generator=gen, dtype=torch.float64) / math.sqrt(side))
            self.factors.append((None if p_in is None else p_in.to(device), None if p_out is None else p_out.to(device)))
            self.scales.append(self._scales(name, mod, moments, device))

    @staticmethod
    def _scales(name: str, mod, moments, device):
        if moments is None:
            return None, None
        v = moments.get(f"{name}.weight")
        if v is None and name == "lm_head":  # tied to the input embedding: the optimizer saw the shared weight
            v = next((t for k, t in moments.items() if k.endswith("wte.weight") or k.endswith("embed_tokens.weight")), None)
        if v is None:
            return None, None
        v = v.double().to(device)
        v = v.T if isinstance(mod, torch.nn.Linear) else v  # as (in, out)
        eps = 1e-30
        row, col = v.sum(1) + eps, v.sum(0) + eps  # Adafactor: v ~ row col^T / sum(v)
        scale = v.sum() + eps
        return (row / scale.sqrt()).rsqrt(), (col / scale.sqrt()).rsqrt()

    def project(self, k: int, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(B, T, in) inputs and (B, T, out) output gradients -> (B, d_in * d_out) projected per-example gradients."""
        p_in, p_out = self.factors[k]
        s_in, s_out = self.scales[k]
        if s_in is not None:
            acts, grads = acts * s_in, grads * s_out
        if p_in is not None:
            acts = acts @ p_in
        if p_out is not None:
            grads = grads @ p_out
        return torch.einsum("bti,bto->bio", acts, grads).flatten(1)


def _projected_gradients(lm: CausalLanguageModel, examples, projector: _Projector, layers, batch_size: int) -> torch.Tensor:
    """Unit-normalised projected gradients of the examples' summed target-token losses: (n, dim)."""
    rows = []
    for _, batch in _batches(lm, examples, batch_size):
        acts: dict[int, torch.Tensor] = {}
        outs: dict[int, torch.Tensor] = {}
        handles = []
        for k, (_, mod) in enumerate(layers):
            def forward_hook(mod, inp, out, k=k, acts=acts, outs=outs):
                acts[k], outs[k] = inp[0].detach(), out
            handles.append(mod.register_forward_hook(forward_hook))
        try:
            with torch.enable_grad():
                loss = lm.token_losses(batch).sum()
        finally:
            for h in handles:
                h.remove()
        if not all(outs[k].requires_grad for k in outs):
            raise TracInWEError("the model's weights do not require gradients: set requires_grad=True on them")
        grads = torch.autograd.grad(loss, [outs[k] for k in range(len(layers))], allow_unused=True)
        grads = [torch.zeros_like(outs[k]) if g is None else g.detach() for k, g in enumerate(grads)]
        mask = batch["attention_mask"].to(next(lm.module.parameters()).device).double()[:, :, None]
        parts = [projector.project(k, acts[k].double() * mask, grads[k].double()) for k in range(len(layers))]
        g = torch.cat(parts, dim=1)
        rows.append(g / g.norm(dim=1, keepdim=True).clamp(min=1e-300))
    return torch.cat(rows)


def lm_projected_gradient_scores(
    checkpoints: Sequence[tuple[object, float]],
    train_examples: Sequence[LMExample],
    query_examples: Sequence[LMExample],
    dim: int = 4096,
    seed: int = 0,
    max_length: int = 64,
    *,
    batch_size: int = 32,
    second_moments: Sequence[Mapping[str, torch.Tensor] | None] | None = None,
    tokenizer=None,
    progress: bool = False,
) -> np.ndarray:
    """TrackStar-like cosine of projected whole-model (Linear / Conv1D weight) gradients, summed over checkpoints.

    ``dim`` is split evenly over the tracked layers (each gets a ``sqrt(dim / layers)``-square Kronecker factor
    pair; a side no wider than that is not projected, so a large ``dim`` gives the exact gradient cosine).
    ``second_moments``: per checkpoint, AdamW's ``exp_avg_sq`` by parameter name (`load_second_moment`), used
    Adafactor-style (factored) to normalise the gradients before projection; None: no normalisation.
    Learning rates are not used (cosines are summed unweighted). (n_query, n_train), higher = proponent.
    """
    _check(train_examples, query_examples)
    if dim < 1:
        raise TracInWEError(f"dim must be at least 1, got {dim}")
    models, _ = _models(checkpoints, tokenizer, max_length)
    if second_moments is not None and len(second_moments) != len(models):
        raise TracInWEError(f"{len(second_moments)} second moments for {len(models)} checkpoints: pass one per checkpoint")
    total = np.zeros((len(query_examples), len(train_examples)), dtype=np.float64)
    for c, lm in enumerate(models):
        module = lm.module.eval()
        layers = tracked_layers(module)
        if not layers:
            raise TracInWEError(f"{type(module).__name__} has no Linear / Conv1D layers to track")
        device = next(module.parameters()).device
        projector = _Projector(layers, dim, seed, None if second_moments is None else second_moments[c], device)
        q = _projected_gradients(lm, query_examples, projector, layers, batch_size)
        chunks = range(0, len(train_examples), 8 * batch_size)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"projected gradients {c + 1}/{len(models)}")
        for lo in chunks:
            x = _projected_gradients(lm, train_examples[lo : lo + 8 * batch_size], projector, layers, batch_size)
            total[:, lo : lo + x.shape[0]] += (q @ x.T).cpu().numpy()
    return total
