"""Causal-LM capture throughput against the physical limit, and exactness against dense autograd and Captum.

Models: GPT-2-shaped decoders (2 layers, widths ``--widths``, byte-level BPE of 2,000 tokens learned on the
texts, tied input/output embeddings as GPT-2) trained from scratch for ``--epochs`` on real Rotten Tomatoes
snippets (`tracinwe.training.causal_lm.train_decoder`), two checkpoints each, max_length 64. Documents are plain
texts: the loss is the summed next-token NLL of every token after the first.

1. Throughput: ``TracInWE(task="causal-lm").capture`` (tokenisation, forward, activation-only backward, sparse
   records) against a bare forward + backward of the same summed target-token loss that takes only the gradient
   at the word-embedding lookup output (no weight gradient, eval mode) on pre-tokenised batches (the bare pass
   includes nothing else: no tokenisation, no records). Bare batches: (a) sorted by token count (the fewest padded
   tokens; the capture groups its batches this way, and the JSON records that the padded tokens of the batches it
   ran equal these), (b) sorted by characters (what the capture did before). Runs alternate; a paired ratio is the
   median over rounds of bare seconds / capture seconds (>= 0.9 is the issue's target). The 1-minute load average
   is recorded at every round; ``--autogroup-nice -15`` raises this process's scheduling group on a shared machine.
2. Exactness on ``--n-train`` x ``--n-test`` held-out documents: ``tw.scores`` against
   (a) a dense oracle: per document, the V x d gradient of its summed target NLL with respect to a copy of the
       word-embedding matrix that feeds only the input lookup (one-hot @ E; the tied output head keeps the
       original weight), dotted and weighted by the learning rate over the two checkpoints;
   (b) ``captum.influence.TracInCP`` with ``layers=["model.transformer.wte"]``. Captum differentiates the layer's
       *weight*; GPT-2 ties it to the output softmax, so that gradient would include the output-side use. Captum
       therefore gets an untied copy of each checkpoint: the same weights, with ``lm_head.weight`` a separate
       clone (the same function), so the ``wte`` weight gradient is exactly the input-side gradient.
   Reported: the maximum |difference| relative to the maximum |score|, and the wall-clock times.

Usage::

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false python benchmarks/bench_lm_capture.py
    python benchmarks/bench_lm_capture.py --widths 128 --throughput-texts 64 --n-train 16 --n-test 4 --out lm_capture-quick

Prints tables and writes ``benchmarks/results/lm_capture.json``. Captum is optional: without it the JSON says so.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_capture import environment, raise_priority, write_result  # noqa: E402

MAX_LENGTH = 64
DATA_SOURCE = "bundled:rotten-tomatoes"
EMBEDDING_LAYER = "model.transformer.wte"


def snippets(n: int, seed: int) -> list[str]:
    """Distinct real snippets of 20-200 characters and at least 6 words, in a seeded order."""
    from tracinwe.data import load_dataset_source

    data = load_dataset_source(DATA_SOURCE).dedupe()
    texts = [t for t in data.sample(len(data), seed=seed).texts if 20 <= len(t) <= 200 and len(t.split(" ")) >= 6]
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} usable snippets for {n}")
    return texts[:n]


def train_models(texts: list[str], width: int, epochs: float, seed: int, folder: Path):
    """A 2-layer GPT-2 of ``width`` trained on ``texts``: its two checkpoints [(model, lr)], the tokenizer, seconds."""
    from tracinwe.training.causal_lm import DecoderConfig, load_causal_lm, train_decoder

    config = DecoderConfig(n_layer=2, n_embd=width, n_head=max(2, width // 64), n_positions=MAX_LENGTH, vocab_size=2000,
                           epochs=epochs, batch_size=32, num_checkpoints=2, max_length=MAX_LENGTH, seed=seed)
    t0 = time.perf_counter()
    run = train_decoder(texts, folder, config)
    seconds = time.perf_counter() - t0
    checkpoints = [(load_causal_lm(p, max_length=MAX_LENGTH).module.eval(), lr)
                   for p, lr in zip(run.checkpoints, run.learning_rates)]
    return checkpoints, run.tokenizer, seconds, config


# -- 1. throughput ------------------------------------------------------------------------------


def bare_seconds(lm, batches) -> float:
    """Forward + gradient of the summed target NLL w.r.t. the lookup output only (weights frozen, eval mode)."""
    from tracinwe.capture.gradients import prepared_for_capture

    taken: list[torch.Tensor] = []

    def make_leaf(_module, _inputs, output):
        leaf = output.detach().requires_grad_(True)
        taken.append(leaf)
        return leaf

    handle = lm.embedding.register_forward_hook(make_leaf)
    try:
        with prepared_for_capture(lm.module, None), torch.enable_grad():
            start = time.perf_counter()
            for batch in batches:
                loss = lm.token_losses(batch).sum()
                torch.autograd.grad(loss, taken.pop())
            return time.perf_counter() - start
    finally:
        handle.remove()


def throughput(checkpoints, tokenizer, texts: list[str], batch_size: int, repeats: int) -> dict:
    """Alternating rounds of: the bare pass on batches sorted by token count (the fewest padded tokens: what the
    capture now forms, one window per chunk of ``batch_size * 16`` texts), the capture, the bare pass on batches
    sorted by characters (what the capture formed before), and the tokenisation alone."""
    from tracinwe import TracInWE
    from tracinwe.capture import gradients

    if len(texts) > batch_size * 16:
        raise SystemExit(f"--throughput-texts {len(texts)} exceeds one capture chunk ({batch_size * 16}): the token-sorted "
                         "bare batches would not be the capture's")
    by_chars = sorted(texts, key=len)  # stable sorts of the same input order
    by_tokens = sorted(texts, key=lambda t: len(tokenizer(t)["input_ids"]))
    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=batch_size, task="causal-lm")

    def batches_of(lm, order):
        return [lm.tokenize(order[b : b + batch_size]) for b in range(0, len(order), batch_size)]

    lms = [tw.classifier(c) for c in range(len(checkpoints))]
    best = [(lm, batches_of(lm, by_tokens)) for lm in lms]
    old = [(lm, batches_of(lm, by_chars)) for lm in lms]

    def bare(prepared) -> float:
        return sum(bare_seconds(lm, batches) for lm, batches in prepared)

    def capture() -> float:
        start = time.perf_counter()
        records = tw.capture(texts, None)
        elapsed = time.perf_counter() - start
        assert len(records) == len(checkpoints) and len(records[0]) == len(texts)
        return elapsed

    def tokenize() -> float:
        """The tokenisation the capture does and the bare pass is spared (once: the checkpoints share a tokenizer)."""
        start = time.perf_counter()
        lms[0].tokenize(texts)
        return time.perf_counter() - start

    # the batches the capture really runs (recorded once), to check they are the token-sorted ones
    ran: list[int] = []
    real = gradients.batch_token_gradients
    gradients.batch_token_gradients = lambda clf, batch, y, s, **kw: (ran.append(int(batch["input_ids"].numel())),
                                                                real(clf, batch, y, s, **kw))[1]
    try:
        capture()
    finally:
        gradients.batch_token_gradients = real
    bare(best), capture(), bare(old)  # warm-up
    times: dict[str, list[float]] = {"bare": [], "capture": [], "bare_char_sorted": [], "tokenize": []}
    loads = [os.getloadavg()[0]]
    for _ in range(repeats):
        times["bare"].append(bare(best))
        times["capture"].append(capture())
        times["bare_char_sorted"].append(bare(old))
        times["tokenize"].append(tokenize())
        loads.append(os.getloadavg()[0])
    work = len(texts) * len(checkpoints)

    def padded(prepared) -> int:
        return sum(int(b["input_ids"].numel()) for b in prepared[0][1])

    def paired(key: str) -> list[float]:
        return [b / c for b, c in zip(times[key], times["capture"])]

    return {
        "texts": len(texts), "checkpoints": len(checkpoints), "batch_size": batch_size, "repeats": repeats,
        "real_tokens_per_checkpoint": sum(int(b["attention_mask"].sum()) for b in best[0][1]),
        "padded_tokens_capture_batches": sum(ran) // len(checkpoints), "padded_tokens_token_sorted": padded(best),
        "padded_tokens_char_sorted": padded(old),
        "seconds": times, "load_average_1min_per_round": loads,
        "bare_token_sorted_examples_per_s": work / statistics.median(times["bare"]),
        "bare_char_sorted_examples_per_s": work / statistics.median(times["bare_char_sorted"]),
        "capture_examples_per_s": work / statistics.median(times["capture"]),
        "ratio_paired_token_sorted": statistics.median(paired("bare")),
        "ratio_paired_token_sorted_min": min(paired("bare")), "ratio_paired_token_sorted_max": max(paired("bare")),
        "ratio_paired_char_sorted": statistics.median(paired("bare_char_sorted")),
        "ratio_paired_char_sorted_min": min(paired("bare_char_sorted")),
        "ratio_paired_char_sorted_max": max(paired("bare_char_sorted")),
        "tokenize_share_of_capture": statistics.median(times["tokenize"]) / statistics.median(times["capture"]),
        "target": 0.9,
    }


# -- 2. exactness -------------------------------------------------------------------------------


def input_side_gradient(model, ids: list[int]) -> torch.Tensor:
    """V x d gradient of a document's summed NLL (targets: every token after the first) with respect to a copy of
    the word-embedding matrix that feeds only the input lookup (one-hot @ E)."""
    weight = model.get_input_embeddings().weight.detach().clone().requires_grad_(True)
    one_hot = nn.functional.one_hot(torch.tensor(ids), weight.shape[0]).to(weight.dtype)
    with torch.enable_grad():
        logits = model(inputs_embeds=(one_hot @ weight)[None]).logits[0]
        loss = nn.functional.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:]), reduction="sum")
        (grad,) = torch.autograd.grad(loss, weight)
    return grad.double()


def oracle_scores(checkpoints, tokenizer, train: list[str], test: list[str]) -> np.ndarray:
    out = np.zeros((len(test), len(train)))
    for model, lr in checkpoints:
        g_train = torch.stack([input_side_gradient(model, tokenizer(t)["input_ids"]).flatten() for t in train])
        g_test = torch.stack([input_side_gradient(model, tokenizer(t)["input_ids"]).flatten() for t in test])
        out += lr * (g_test @ g_train.T).numpy()
    return out


class LogitsOf(nn.Module):
    """Captum calls ``model(*batch[:-1])``: (input_ids, attention_mask) -> next-token logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class SummedTargetNLL(nn.Module):
    """Per-document summed next-token NLL; ``targets`` are the input ids with -100 where a token is no target."""

    reduction = "none"  # Captum checks it: one loss per example

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nll = nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets[:, 1:], ignore_index=-100,
                                          reduction="none")
        return nll.sum(dim=1)


def untied_copy(model: nn.Module) -> nn.Module:
    """The same function with ``lm_head.weight`` a separate clone of the word embedding: ``wte``'s weight gradient is
    then the input-side gradient only."""
    from transformers import GPT2LMHeadModel

    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = False
    untied = GPT2LMHeadModel(config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = model.get_input_embeddings().weight.detach().clone()
    untied.load_state_dict(state)
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    return untied.eval()


def loader(tokenizer, texts: list[str], batch_size: int):
    """(input_ids, attention_mask, targets) batches, right-padded as our capture pads."""
    from torch.utils.data import DataLoader

    rows = [tokenizer(t)["input_ids"][:MAX_LENGTH] for t in texts]

    def collate(items):
        width = max(len(r) for r in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        targets = torch.full((len(items), width), -100, dtype=torch.long)
        for i, r in enumerate(items):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
            targets[i, 1 : len(r)] = torch.tensor(r[1:])
        return ids, mask, targets

    return DataLoader(rows, batch_size=batch_size, shuffle=False, collate_fn=collate)


def captum_scores(checkpoints, tokenizer, train: list[str], test: list[str], batch_size: int) -> np.ndarray:
    from captum.influence import TracInCP

    states = {f"checkpoint-{c}": (untied_copy(m).state_dict(), lr) for c, (m, lr) in enumerate(checkpoints)}
    wrapper = LogitsOf(untied_copy(checkpoints[0][0])).eval()
    for p in wrapper.parameters():
        p.requires_grad_(False)  # Captum turns on the wte weight only

    def load(model: nn.Module, name: str) -> float:
        state, lr = states[name]
        model.model.load_state_dict(state)
        return lr

    tracin = TracInCP(wrapper, loader(tokenizer, train, batch_size), checkpoints=list(states), checkpoints_load_func=load,
                      layers=[EMBEDDING_LAYER], loss_fn=SummedTargetNLL(), sample_wise_grads_per_batch=False)
    return tracin.influence(loader(tokenizer, test, len(test))).double().numpy()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def exactness(checkpoints, tokenizer, train: list[str], test: list[str], batch_size: int, skip_captum: bool) -> dict:
    from tracinwe import TracInWE

    tw = TracInWE(checkpoints, tokenizer=tokenizer, max_length=MAX_LENGTH, batch_size=batch_size, task="causal-lm")
    tw.scores(train[:4], None, test[:2], None)  # warm-up
    ours, ours_s = timed(lambda: np.asarray(tw.scores(train, None, test, None), dtype=np.float64))
    dense, dense_s = timed(lambda: oracle_scores(checkpoints, tokenizer, train, test))
    scale = float(np.abs(dense).max())
    row = {"n_train": len(train), "n_test": len(test), "max_abs_score": scale,
           "tracinwe_s": ours_s, "dense_oracle_s": dense_s,
           "max_rel_diff_dense": float(np.abs(ours - dense).max()) / scale}
    if skip_captum:
        row["captum"] = "skipped (--skip-captum)"
        return row
    try:
        import captum
    except ImportError:
        row["captum"] = "not run: captum is not installed in this environment (pip install captum)"
        return row
    theirs, captum_s = timed(lambda: captum_scores(checkpoints, tokenizer, train, test, batch_size))
    row.update({"captum_version": captum.__version__, "captum_file": captum.__file__, "captum_s": captum_s,
                "speedup_vs_captum": captum_s / ours_s,
                "max_rel_diff_captum": float(np.abs(ours - theirs).max()) / float(np.abs(theirs).max()),
                "captum_vs_dense": float(np.abs(theirs - dense).max()) / scale,
                "captum": "TracInCP, layers=['model.transformer.wte'] on an untied copy (lm_head.weight cloned), "
                          "sample_wise_grads_per_batch=False, summed target NLL per document"})
    return row


# -- report -------------------------------------------------------------------------------------


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=190)
    table = Table(title="LM capture vs bare forward + activation-only backward (documents x checkpoints / s)")
    for col in ("model", "texts", "bare token-sorted doc/s", "capture doc/s", "capture / bare token-sorted (min-max)",
                "target", "bare char-sorted doc/s", "capture / it", "padded tokens capture / token-sorted / char-sorted",
                "tokenize share"):
        table.add_column(col, justify="right")
    for m in result["models"]:
        t = m["throughput"]
        table.add_row(m["name"], str(t["texts"]), f"{t['bare_token_sorted_examples_per_s']:.1f}",
                      f"{t['capture_examples_per_s']:.1f}",
                      f"{t['ratio_paired_token_sorted']:.3f} ({t['ratio_paired_token_sorted_min']:.2f}-"
                      f"{t['ratio_paired_token_sorted_max']:.2f})", ">= 0.9",
                      f"{t['bare_char_sorted_examples_per_s']:.1f}",
                      f"{t['ratio_paired_char_sorted']:.3f} ({t['ratio_paired_char_sorted_min']:.2f}-"
                      f"{t['ratio_paired_char_sorted_max']:.2f})",
                      f"{t['padded_tokens_capture_batches']} / {t['padded_tokens_token_sorted']} / "
                      f"{t['padded_tokens_char_sorted']}",
                      f"{t['tokenize_share_of_capture']:.2f}")
    console.print(table)
    table = Table(title="tw.scores vs dense input-side autograd and Captum TracInCP (max |diff| / max |score|)")
    for col in ("model", "train x test", "TracInWE s", "dense s", "rel diff dense", "Captum s", "rel diff Captum",
                "speedup"):
        table.add_column(col, justify="right")
    for m in result["models"]:
        e = m["exactness"]
        has = "captum_s" in e
        table.add_row(m["name"], f"{e['n_train']} x {e['n_test']}", f"{e['tracinwe_s']:.2f}", f"{e['dense_oracle_s']:.2f}",
                      f"{e['max_rel_diff_dense']:.1e}", f"{e['captum_s']:.2f}" if has else "-",
                      f"{e['max_rel_diff_captum']:.1e}" if has else "-", f"{e['speedup_vs_captum']:.1f}x" if has else "-")
    console.print(table)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[128, 256], help="hidden sizes of the 2-layer decoders")
    parser.add_argument("--n-docs", type=int, default=500, help="training documents of the decoders")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--throughput-texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="alternating bare / capture rounds")
    parser.add_argument("--n-train", type=int, default=128, help="training documents scored in the exactness check")
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--skip-captum", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the tokenising thread gets a core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="lm_capture")
    parser.add_argument("--autogroup-nice", type=int, default=None,
                        help="write this niceness to /proc/self/autogroup (e.g. -15 on a machine shared with other jobs)")
    args = parser.parse_args()
    raise_priority(args.autogroup_nice)
    torch.set_num_threads(args.threads)
    from transformers import logging

    logging.set_verbosity_error()
    started = time.perf_counter()
    texts = snippets(args.n_docs + args.n_test + max(0, args.throughput_texts - args.n_docs), args.seed)
    docs, held = texts[: args.n_docs], texts[args.n_docs :]
    result: dict = {"benchmark": "lm_capture", "config": {**vars(args), "max_length": MAX_LENGTH, "data": DATA_SOURCE,
                                                          "layers": 2, "vocab_size": 2000, "tied_embeddings": True},
                    "environment": environment(), "models": []}
    with tempfile.TemporaryDirectory(prefix="bench-lm-capture-") as work:
        for width in args.widths:
            checkpoints, tokenizer, train_s, config = train_models(docs, width, args.epochs, args.seed, Path(work) / str(width))
            fits = [t for t in texts if len(tokenizer(t)["input_ids"]) <= MAX_LENGTH]  # the facade never truncates
            fit_docs = [t for t in docs if t in set(fits)]
            fit_held = [t for t in held if t in set(fits)]
            row = {"name": f"GPT-2 2x{width}", "width": width, "n_head": config.n_head, "train_s": train_s,
                   "learning_rates": [lr for _, lr in checkpoints],
                   "throughput": throughput(checkpoints, tokenizer, fits[: args.throughput_texts], args.batch_size,
                                            args.repeats),
                   "exactness": exactness(checkpoints, tokenizer, fit_docs[: args.n_train], fit_held[: args.n_test],
                                          args.batch_size, args.skip_captum)}
            result["models"].append(row)
            write_result(args.out, result)
    result["total_s"] = time.perf_counter() - started
    path = write_result(args.out, result)
    print_tables(result)
    print(f"wrote {path} in {result['total_s']:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
