"""Capture TokenGradients with one ordinary batched backward pass per batch.

In eval mode the examples of a batch do not interact, so the gradient of the
*summed* batch loss with respect to the (B, T, d) lookup output is exactly the
per-example, per-position gradient: no per-sample machinery, no weight
gradients. The user's model is restored exactly (modes, ``requires_grad``
flags, device) afterwards; several threads may capture with one model at once
(`tracinwe.capture.model_state`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tracinwe.capture import prefetch
from tracinwe.capture.aggregate import (
    DeferredRecords,
    HeldPositions,
    aggregate_by_token,
    assemble_in_input_order,
    deferred_aggregate,
    held_positions,
    in_input_order,
    sum_in_input_order,
)
from tracinwe.capture.ahead import TokenizedAhead
from tracinwe.capture.batching import MAX_TOKENIZE_WORKERS, background_workers, pad_values, token_sorted_batches
from tracinwe.capture.model_state import LookupOutputTap, prepared_for_capture
from tracinwe.capture.prefetch import can_overlap, prefetched
from tracinwe.capture.records import TokenGradients
from tracinwe.capture.sequences import TokenSequences, cached_token_sequences, token_lists
from tracinwe.models.contract import Batch, TextClassifier

#: Capture precisions: "float32" (exact) or "bfloat16" (autocast forward, `CaptureSettings.precision`).
PRECISIONS = ("float32", "bfloat16")

#: On CUDA, records are aggregated without waiting for the device and put in input order there, one copy to the host per
#: chunk (`tracinwe.capture.aggregate`); False: each batch waits, and the host orders the chunk (as on the CPU).
DEFER_ON_CUDA = True
#: On the CPU, each batch's rows are held unsummed and a chunk's records summed at once, in input order
#: (`tracinwe.capture.aggregate.sum_in_input_order`); False: each batch is summed, then the chunk put in order.
HOLD_ON_CPU = True


@dataclass(frozen=True)
class CaptureSettings:
    """How gradients are captured. Saved beside every artefact built from them.

    Attributes:
        top_k: keep only the k positions with the largest gradient norm per
            example (TracIn-WE-Topk; the paper uses 10). None keeps all.
        keep_special_tokens: True keeps every special token ([CLS], [SEP], ...);
            False drops them all; a collection of token strings or ids keeps
            only those. Padding is always dropped.
        batch_size: examples per forward/backward pass.
        max_length: tokens per text (longer texts are truncated); applied by
            the tokenizer of each checkpoint the facade loads.
        precision: "float32" (exact) or "bfloat16": the forward pass under
            ``torch.autocast`` in bfloat16 (fast on a GPU). The gradients are then
            those of a bfloat16 model, not the float32 one: scores agree to about
            1e-2 relative, and the top of a ranking mostly (measured in
            benchmarks/bench_capture.py); float32 is the method's exact answer.
    """

    top_k: int | None = None
    keep_special_tokens: bool | frozenset[str | int] = True
    batch_size: int = 32
    length_sorted: bool = field(default=True, metadata={"help": "batch texts of similar length together"})
    max_length: int = 128
    precision: str = "float32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 or None, got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {self.max_length}")
        if not isinstance(self.keep_special_tokens, bool):
            object.__setattr__(self, "keep_special_tokens", frozenset(self.keep_special_tokens))

    def to_json(self) -> dict:
        return {**self.identity(), "batch_size": self.batch_size, "length_sorted": self.length_sorted}

    def identity(self) -> dict:
        """The settings that decide the gradients (batch size and batching order do not), as JSON."""
        keep = self.keep_special_tokens
        identity = {
            "top_k": self.top_k,
            "keep_special_tokens": keep if isinstance(keep, bool) else sorted(map(str, keep)),
            "max_length": self.max_length,
        }
        if self.precision != "float32":  # named only when not the default: earlier artefacts keep their identity
            identity["precision"] = self.precision
        return identity


def _kept_positions(batch: Batch, classifier: TextClassifier, keep_special: bool | frozenset) -> torch.Tensor:
    """(B, T) bool: real tokens, with special tokens dropped as the settings say."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
    specials = classifier.special_token_ids
    if keep_special is True or not specials:
        return mask
    if keep_special is False:
        keep_ids: set[int] = set()
    else:
        strings = classifier.token_strings(sorted(specials))
        keep_ids = {i for i, s in zip(sorted(specials), strings) if s in keep_special or i in keep_special}
    drop = torch.tensor(sorted(specials - keep_ids), dtype=ids.dtype, device=ids.device)
    return mask & ~torch.isin(ids, drop)


def batch_token_gradients(
    classifier: TextClassifier,
    batch: Batch,
    labels: torch.Tensor | None,
    settings: CaptureSettings,
    deferred: bool = False,
    held: bool = False,
) -> TokenGradients | DeferredRecords | HeldPositions:
    """TokenGradients of one batch; ``labels=None`` differentiates the predicted label.

    The model must already be prepared (`prepared_for_capture`). ``deferred``: the records
    without waiting for the device (`tracinwe.capture.aggregate.deferred_aggregate`); ``held``:
    the rows unsummed, for a chunk's `tracinwe.capture.aggregate.sum_in_input_order`.
    """
    tap = LookupOutputTap(classifier.embedding)
    try:
        with torch.enable_grad():
            device_type = batch["input_ids"].device.type
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=settings.precision == "bfloat16"):
                losses, logits, target = classifier.batch_losses(batch, labels)
            lookup = tap.take()
            (grad,) = torch.autograd.grad(losses.float().sum(), lookup)
    finally:
        tap.close()
    kept = _kept_positions(batch, classifier, settings.keep_special_tokens)
    if settings.top_k is not None and settings.top_k < kept.shape[1]:
        norms = grad.float().norm(dim=-1).masked_fill(~kept, -1.0)
        top = norms.topk(settings.top_k, dim=1).indices
        in_top = torch.zeros_like(kept).scatter_(1, top, True)
        kept = kept & in_top
    aggregate = deferred_aggregate if deferred else held_positions if held else aggregate_by_token
    return aggregate(batch["input_ids"], grad, kept, classifier.vocab_size, target, logits.detach())


def _batches(n: int, texts: Sequence[str], settings: CaptureSettings, window: int) -> Iterator[np.ndarray]:
    """Batches of example indices; within each window texts of similar length go together (a stable sort)."""
    for start in range(0, n, window):
        idx = np.arange(start, min(start + window, n), dtype=np.int64)
        if settings.length_sorted:
            lengths = np.fromiter((len(texts[i]) for i in range(start, start + idx.size)), dtype=np.int64, count=idx.size)
            idx = idx[np.argsort(lengths, kind="stable")]
        for b in range(0, idx.size, settings.batch_size):
            yield idx[b : b + settings.batch_size]


def iter_token_gradients(
    classifier: TextClassifier,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    description: str = "capturing gradients",
    batch_cache: dict | None = None,
) -> Iterator[tuple[int, TokenGradients]]:
    """Yield ``(start, records)`` for consecutive chunks of examples, in input order.

    Memory is bounded by the chunk (default 16 batches), not by the data set.
    ``batch_cache``: tokenised batches by chunk, filled on the first pass and
    reused by later ones (checkpoints with the same `tokenization_key`).
    Each chunk is tokenised once and its batches grouped by token count (`tracinwe.capture.batching`);
    batches are tokenised by a background thread ahead of the model where it can overlap
    (`tracinwe.capture.prefetch.can_overlap`); on an accelerator they are pinned and copied without blocking.
    """
    from tqdm.auto import tqdm

    n = len(texts)
    chunk = chunk_size or settings.batch_size * 16
    run_device = torch.device(device) if device is not None else _module_device(classifier.module)
    pin = run_device.type == "cuda"
    defer = pin and DEFER_ON_CUDA
    hold = run_device.type == "cpu" and HOLD_ON_CPU
    overlap = can_overlap(run_device)
    targets = None if labels is None else torch.as_tensor(np.asarray(labels, dtype=np.int64))
    bar = tqdm(total=n, desc=description, unit="ex", disable=not progress, leave=False)
    with prepared_for_capture(classifier.module, device), torch.inference_mode(False):
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            parts: list[tuple[np.ndarray, TokenGradients | DeferredRecords | HeldPositions]] = []
            # the producer ends with the chunk: nothing tokenises behind the caller's back while it holds the records;
            # batches already tokenised (another checkpoint's pass) need no thread
            ahead = 0 if not overlap or (batch_cache is not None and (start, stop) in batch_cache) else None
            for local, batch, y in prefetched(_chunk_batches(classifier, texts, text_pairs, targets, settings, start, stop,
                                                             batch_cache, pin, lead=ahead is None,
                                                             background=background_workers(run_device)), ahead):
                batch = {k: v.to(run_device, non_blocking=pin) for k, v in batch.items()}
                y = None if y is None else y.to(run_device, non_blocking=pin)
                parts.append((local, batch_token_gradients(classifier, batch, y, settings, deferred=defer, held=hold)))
                bar.update(local.size)
            yield start, (assemble_in_input_order(parts) if defer else
                          sum_in_input_order(parts, classifier.vocab_size) if hold else in_input_order(parts))
    bar.close()


def _chunk_batches(classifier: TextClassifier, texts, text_pairs, targets: torch.Tensor | None, settings: CaptureSettings,
                   start: int, stop: int, batch_cache: dict | None,
                   pin: bool, lead: bool = False, background: int = 1) -> Iterator[tuple[np.ndarray, Batch, torch.Tensor | None]]:
    """``(local indices, CPU batch, labels)`` of every batch of the chunk ``start:stop`` (tokenised, or from ``batch_cache``,
    which a complete pass fills)."""
    cached = batch_cache.get((start, stop)) if batch_cache is not None else None
    fresh: list[tuple[np.ndarray, Batch]] = []
    # tokenised here: in the prefetching thread (``lead``: the model waits for the first batch, then runs beside it) or,
    # without one, in the caller's thread (all cores tokenise; the model waits anyway)
    made = None if cached is not None else _tokenized_batches(classifier, texts, text_pairs, settings, start, stop,
                                                              lead=lead, workers=background if lead else MAX_TOKENIZE_WORKERS)
    for local, batch in cached if cached is not None else made:
        if cached is None:
            if pin:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            fresh.append((local, batch))
        y = None if targets is None else targets[torch.from_numpy(local + start)]
        yield local, batch, (y.pin_memory() if pin and y is not None else y)
    if cached is None and batch_cache is not None:
        batch_cache[(start, stop)] = fresh


def _tokenized_batches(classifier: TextClassifier, texts, text_pairs, settings: CaptureSettings, start: int, stop: int,
                       lead: bool = False, workers: int = MAX_TOKENIZE_WORKERS):
    """``(local indices, CPU batch)`` of the chunk ``start:stop``: tokenised once and grouped by token count
    (`tracinwe.capture.batching`; ``lead``: one quick batch first, as the model waits) for the project's adapters,
    else grouped by characters and tokenised batch by batch."""
    pads = pad_values(classifier)
    if pads is not None:
        window = texts[start:stop]
        pairs = None if text_pairs is None else text_pairs[start:stop]
        yield from token_sorted_batches(classifier, window, pairs, pads, settings.batch_size, settings.length_sorted, lead,
                                        workers)
        return
    for local in _batches(stop - start, texts[start:stop], settings, window=stop - start):
        rows = (local + start).tolist()
        pairs = [text_pairs[i] for i in rows] if text_pairs is not None else None
        yield local, classifier.tokenize([texts[i] for i in rows], pairs)


def _batch_cache(classifier: TextClassifier, texts, text_pairs, settings: CaptureSettings, device, chunk_size: int | None):
    """The batch cache of a capture whose checkpoints share a tokenisation: tokenised ahead by a thread where it can
    overlap the model and batches are grouped by token count, else filled by the first pass."""
    run_device = torch.device(device) if device is not None else _module_device(classifier.module)
    if not texts or pad_values(classifier) is None or not can_overlap(run_device) or prefetch.PREFETCH_BATCHES < 1:
        return {}
    pin = run_device.type == "cuda"
    chunk = chunk_size or settings.batch_size * 16

    def make(i: int, key: tuple[int, int]):
        for local, batch in _tokenized_batches(classifier, texts, text_pairs, settings, key[0], key[1], lead=i == 0,
                                               workers=background_workers(run_device)):
            yield local, ({k: v.pin_memory() for k, v in batch.items()} if pin else batch)

    return TokenizedAhead([(a, min(a + chunk, len(texts))) for a in range(0, len(texts), chunk)], make)


def _closed(cache: dict, stop: bool = False) -> None:
    if isinstance(cache, TokenizedAhead):
        cache.close(stop)


def _in_memory_chunk(count: int, settings: CaptureSettings, device: str | torch.device | None,
                     classifier: TextClassifier) -> int:
    """The chunk of a capture held in memory: on a CPU all the texts (the records are put in order once, not chunk by
    chunk and then again), on an accelerator 16 batches (their records wait on the device until the chunk ends)."""
    run_device = torch.device(device) if device is not None else _module_device(classifier.module)
    return max(count, 1) if run_device.type == "cpu" else settings.batch_size * 16


def capture_checkpoints(
    classifiers: Iterable[TextClassifier],
    texts: Sequence[str],
    labels: Sequence[int] | None,
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
) -> list[TokenGradients]:
    """Every checkpoint's TokenGradients of the same texts (in memory).

    Consecutive checkpoints whose tokenizers agree (`TextClassifier.tokenization_key`)
    share one tokenisation of the texts: for small models a large share of the capture.
    """
    return capture_checkpoints_with_tokens(classifiers, texts, labels, text_pairs, settings, device, progress,
                                           chunk_size, keep_tokens=False)[0]


def capture_checkpoints_with_tokens(
    classifiers: Iterable[TextClassifier],
    texts: Sequence[str],
    labels: Sequence[int] | None,
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    progress: bool = False,
    chunk_size: int | None = None,
    keep_tokens: bool = True,
    labels_from_first: bool = False,
) -> tuple[list[TokenGradients], TokenSequences | None]:
    """`capture_checkpoints`, and the texts' token ids from the first checkpoint's batches (`cached_token_sequences`;
    None where they were not kept, or ``keep_tokens`` is False). ``labels_from_first``: with ``labels=None``, the first
    checkpoint is captured on its own predictions and the others on those."""
    out: list[TokenGradients] = []
    cache: dict = {}
    shared = None
    tokens = None
    try:
        for classifier in classifiers:
            chunk = chunk_size or _in_memory_chunk(len(texts), settings, device, classifier)
            key = classifier.tokenization_key()
            if key is None or key != shared:
                _closed(cache)
                cache = {} if key is None else _batch_cache(classifier, texts, text_pairs, settings, device, chunk)
                shared = key
            parts = [r for _, r in iter_token_gradients(classifier, texts, labels, text_pairs, settings, device, chunk,
                                                        progress, batch_cache=cache if key is not None else None)]
            if not parts:
                raise ValueError("no texts to capture")
            out.append(parts[0] if len(parts) == 1 else TokenGradients.concat(parts))  # one chunk: no copy
            if len(out) == 1:
                if key is not None and keep_tokens:
                    tokens = cached_token_sequences(cache, len(texts))
                if labels is None and labels_from_first:
                    labels = out[0].labels.tolist()
    except BaseException:
        _closed(cache, stop=True)  # no tokenising on behind a failed capture
        raise
    _closed(cache)
    return out, tokens


def capture_on_final_predictions(
    classifier: Callable[[int], TextClassifier],
    num_checkpoints: int,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    progress: bool = False,
) -> list[TokenGradients]:
    """Every checkpoint's TokenGradients on the final checkpoint's predicted labels, without a separate prediction pass.

    The final checkpoint (``classifier(num_checkpoints - 1)``) is captured first on its own
    prediction (the argmax of its logits, which its records keep as ``labels``); the others
    are captured on those labels. Checkpoints whose tokenizers agree share one tokenisation.
    """
    return capture_with_token_ids(classifier, num_checkpoints, texts, text_pairs, settings, device, progress)[0]


def capture_with_token_ids(
    classifier: Callable[[int], TextClassifier],
    num_checkpoints: int,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[list[TokenGradients], list[list[int]] | None]:
    """`capture_on_final_predictions`, and each text's token ids (padding dropped) from the batches it tokenised: the
    positions of a query's words need no second tokenisation. None where the batches were not kept (checkpoints that
    tokenise differently, or a model without a `TextClassifier.tokenization_key`)."""
    last = num_checkpoints - 1
    final_first = (classifier(c) for c in [last, *range(last)])  # loaded one by one, as they are captured
    out, tokens = capture_checkpoints_with_tokens(final_first, texts, None, text_pairs, settings, device, progress,
                                                  labels_from_first=True)
    return [*out[1:], out[0]], None if tokens is None else token_lists(tokens)


def capture_token_gradients(
    classifier: TextClassifier,
    texts: Sequence[str],
    labels: Sequence[int] | None,
    text_pairs: Sequence[str] | None = None,
    settings: CaptureSettings = CaptureSettings(),
    device: str | torch.device | None = None,
    progress: bool = False,
) -> TokenGradients:
    """TokenGradients of all `texts` at one checkpoint (held in memory)."""
    return capture_checkpoints([classifier], texts, labels, text_pairs, settings, device, progress)[0]


def _module_device(module: nn.Module) -> torch.device:
    first = next(module.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
