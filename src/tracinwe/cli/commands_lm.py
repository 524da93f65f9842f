"""The language-model paths of `tracinwe train --task causal-lm` and `tracinwe explain --generate`.

`tracinwe.cli.commands_product` owns the commands and their options; it hands a causal-LM
request to the functions here. Every string from the data goes through `literal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracinwe.cli.common import output_console, print_checkpoint_table, print_json, stderr
from tracinwe.errors import InputTextError, TracInWEError
from tracinwe.report.terminal import literal

__all__ = ["LMTrainRequest", "train_causal_lm", "GenerateRequest", "explain_generate", "is_lm_checkpoints", "build_lm_index"]


@dataclass(frozen=True)
class LMTrainRequest:
    """What ``tracinwe train --task causal-lm`` is asked for."""

    data: str
    out: Path
    model: str
    columns: tuple[str | None, str | None, str | None]  # text, prompt, completion
    epochs: float
    lr: float | None
    batch_size: int
    checkpoints: int
    optimizer: str
    max_length: int
    n_train: int | None
    holdout: float
    seed: int
    overwrite: bool


def train_causal_lm(r: LMTrainRequest, json_out: bool) -> None:
    """Train or fine-tune the decoder, then print the run's table (or its JSON)."""
    from tracinwe.data.documents import load_documents
    from tracinwe.lm_run import SCRATCH_MODELS, train_lm_run
    from tracinwe.run import check_run_folder
    from tracinwe.training.causal_lm import DecoderConfig

    check_run_folder(r.out, r.overwrite)
    with stderr.status(literal(f"loading {r.data} ...")):
        docs = load_documents(r.data, *r.columns)
    train_set, held = docs.split(r.holdout, r.seed) if r.holdout > 0 else (docs, None)
    if r.n_train is not None:
        train_set = train_set.sample(r.n_train, seed=r.seed)
    lr = r.lr if r.lr is not None else (3e-3 if r.model in SCRATCH_MODELS else 5e-5)
    config = DecoderConfig(epochs=r.epochs, batch_size=r.batch_size, learning_rate=lr, optimizer=r.optimizer,
                           num_checkpoints=r.checkpoints, max_length=r.max_length, seed=r.seed)
    summary = train_lm_run(r.out, r.model, train_set, config, heldout=held, data=r.data, overwrite=r.overwrite,
                           status=lambda message: stderr.status(literal(message)))
    if json_out:
        print_json(summary)
        return
    console = print_checkpoint_table(f"run {r.out} (causal LM, {r.model})", summary, json_out)
    held_loss = summary["heldout_loss"]
    console.print(f"{summary['n_train']} training documents, final loss {summary['final_loss']:.3f} per token"
                  + (f", held-out loss {held_loss:.3f} on {summary['n_heldout_scored']}" if held_loss is not None else ""))
    console.print(literal(f'next: tracinwe explain --generate "some prompt" --run-dir {r.out}'))


@dataclass(frozen=True)
class GenerateRequest:
    """What ``tracinwe explain --generate`` is asked for."""

    prompt: str
    folders: list[Path]
    run_dir: Path | None
    data: str | None
    columns: tuple[str | None, str | None, str | None]
    completion: str | None
    max_new_tokens: int
    k: int
    words: int
    html: Path | None
    index: Path | None = None  # a causal-LM index (`tracinwe index build` on an LM run) instead of the documents
    checkpoints_from: Path | None = None


def checkpoint_list(run_dir: Path | None, checkpoints: list[Path] | None) -> tuple[list[Path], Path | None]:
    """``(checkpoint folders, run folder)`` from ``--run-dir`` or ``--checkpoints`` (a run folder or checkpoint folders)."""
    from tracinwe.run import checkpoint_folders

    if (run_dir is None) == (not checkpoints):
        raise TracInWEError("pass exactly one of --run-dir RUN or --checkpoints RUN_OR_CHECKPOINT_FOLDERS")
    if run_dir is not None:
        return checkpoint_folders(run_dir), run_dir
    assert checkpoints
    if len(checkpoints) == 1 and not (checkpoints[0] / "config.json").is_file():
        return checkpoint_folders(checkpoints[0]), checkpoints[0]
    parents = {p.parent for p in checkpoints}
    return list(checkpoints), parents.pop() if len(parents) == 1 else None


def explain_generate(r: GenerateRequest, json_out: bool) -> None:
    """Explain a completion of ``r.prompt`` against the training documents; print it, write ``--html``."""
    from tracinwe.lm_run import explain_max_length, lm_run_documents
    from tracinwe.models.causal_lm import folder_architecture, folder_is_causal_lm
    from tracinwe.report.generation import generation_view
    from tracinwe.run import read_run_info
    from tracinwe.tracin import TracInWE

    if not r.prompt.strip():
        raise InputTextError("--generate is an empty prompt: pass the text the model should continue")
    if r.index is not None:
        return _emit(r, explain_generate_from_index(r), r.index, json_out)
    for folder in r.folders:
        if (folder / "config.json").is_file() and not folder_is_causal_lm(folder):
            raise TracInWEError(f"checkpoint {str(folder)!r} holds a {folder_architecture(folder) or 'model'}, not a causal "
                                "language model: --generate needs decoder checkpoints (tracinwe train --task causal-lm)")
    with stderr.status(literal(f"loading {len(r.folders)} checkpoint(s) ...")):
        tw = TracInWE.from_checkpoints(r.folders, task="causal-lm", max_length=explain_max_length(r.folders[-1]))
    with stderr.status(literal(f"loading {r.data or r.run_dir} ...")):
        docs = lm_run_documents(r.run_dir, r.data, *r.columns)
    limit = int(read_run_info(r.run_dir).get("settings", {}).get("max_length", 0)) if r.run_dir is not None else 0
    examples, n_cut = cut_documents(tw.final.tokenizer, docs.examples, min(limit or tw.max_length, tw.max_length))
    if n_cut:
        stderr.print(f"{n_cut} training documents are longer than {min(limit or tw.max_length, tw.max_length)} tokens: "
                     "explained as training saw them, cut at the end")
    with stderr.status(f"explaining the completion against {len(docs)} training documents ..."):
        out = tw.explain_generation(r.prompt, train=examples, max_new_tokens=r.max_new_tokens,
                                    completion=r.completion, k=r.k, words=None)
    view = generation_view(out, tw.final.tokenizer, docs.ids, generated=r.completion is None, max_length=tw.max_length,
                           words=r.words)
    _emit(r, view, ", ".join(str(p) for p in r.folders), json_out)


def _emit(r: GenerateRequest, view: dict, source, json_out: bool) -> None:
    """Write ``--html``, then print the view (or its JSON)."""
    from tracinwe.report.generation import render_generation

    if r.html is not None:
        render_generation(view, r.html, note=f"{'Index' if r.index is not None else 'Checkpoints'}: {source}.")
    if json_out:
        print_json(view)
        return
    print_generation(output_console(json_out), view, r.words)
    if r.html is not None:
        output_console(json_out).print(Text.assemble("wrote ", literal(r.html, style="bold")))


def explain_generate_from_index(r: GenerateRequest) -> dict:
    """The view of `explain_generate` from a causal-LM index: its top proponents / opponents are the index's (exact);
    each token's supporting documents are chosen among those 2k documents (rescored token by token)."""
    from tracinwe.cli.common import open_index
    from tracinwe.index.integrity import read_manifest
    from tracinwe.lm_run import CAUSAL_LM
    from tracinwe.report.generation import index_generation_view

    task = read_manifest(r.index).task  # checked before any checkpoint is loaded
    if task != CAUSAL_LM:
        raise TracInWEError(f"{str(r.index)!r} is an index of a {task} model, not of a causal language model: "
                            "--generate needs an index built on an LM run (tracinwe index build --run-dir LM_RUN)")
    idx = open_index(r.index, r.checkpoints_from)
    view = index_generation_view(idx, r.prompt, r.completion, r.max_new_tokens, r.k, r.words,
                                 status=lambda message: stderr.status(literal(message)))
    view["index"] = str(r.index)
    return view


def is_lm_checkpoints(run_dir: Path | None, folders: list[Path]) -> bool:
    """Whether ``--run-dir`` is a causal-LM run or the last checkpoint folder holds a causal LM."""
    from tracinwe.lm_run import is_lm_run
    from tracinwe.models.causal_lm import folder_is_causal_lm
    from tracinwe.run import RUN_INFO_FILE

    if run_dir is not None and (run_dir / RUN_INFO_FILE).is_file():
        return is_lm_run(run_dir)
    return bool(folders) and folder_is_causal_lm(folders[-1])


def lm_training_examples(tw, run_dir: Path | None, data: str | None, text_column: str | None,
                         max_length: int | None = None) -> tuple[list, list[str], int]:
    """``(examples, ids, number of documents)`` of an LM run, cut where training (and `explain --generate`) cut them."""
    from tracinwe.lm_run import lm_run_documents
    from tracinwe.run import read_run_info

    with stderr.status(literal(f"loading {data or run_dir} ...")):
        docs = lm_run_documents(run_dir, data, text_column if data is not None else None)
    limit = int(read_run_info(run_dir).get("settings", {}).get("max_length", 0)) if run_dir is not None else 0
    limit = min(max_length or limit or tw.max_length, tw.max_length)
    examples, n_cut = cut_documents(tw.final.tokenizer, docs.examples, limit)
    if n_cut:
        stderr.print(f"{n_cut} training documents are longer than {limit} tokens: indexed as training saw them, cut at the end")
    return examples, list(docs.ids), len(docs)


def build_lm_index(out: Path, folders: list[Path], run_dir: Path | None, data: str | None, text_column: str | None,
                   learning_rates: list[float] | None, max_length: int | None, top_k: int | None, batch_size: int,
                   build_options: dict, precision: str = "float32"):
    """`tracinwe index build` over an LM run's training documents (those `explain --generate` scores); the `Index`."""
    from tracinwe.index import Index
    from tracinwe.lm_run import explain_max_length
    from tracinwe.tracin import TracInWE

    with stderr.status(literal(f"loading {len(folders)} checkpoint(s) ...")):
        tw = TracInWE.from_checkpoints(folders, learning_rates, task="causal-lm", max_length=explain_max_length(folders[-1]),
                                       top_k=top_k, batch_size=batch_size, precision=precision)
    examples, ids, _ = lm_training_examples(tw, run_dir, data, text_column, max_length)
    return Index.build(out, tw, examples, None, ids=ids, progress=True, **build_options)


def cut_documents(tokenizer, examples: list, max_length: int) -> tuple[list, int]:
    """Plain-text documents longer than ``max_length`` tokens cut where training cut them; ``(examples, how many cut)``."""
    out, cut = [], 0
    for e in examples:
        if isinstance(e, str):
            enc = tokenizer(e, return_offsets_mapping=True)
            if len(enc["input_ids"]) > max_length:
                e, cut = e[: enc["offset_mapping"][max_length - 1][1]], cut + 1
        out.append(e)
    return out, cut


def document_text(n: dict) -> Text:
    """A document with its shared tokens coloured: blue where they support, red where they oppose."""
    out = Text()
    for seg in n["segments"]:
        value = seg["contribution"]
        style = "" if value is None else ("bold blue" if value > 0 else "bold red")
        out.append(literal(seg["text"], style=style))
    return out


def shared_tokens(n: dict, limit: int) -> Text:
    shown = [w for w in n["words"] if w["contribution"] != 0][:limit]  # a token can be shared with a zero gradient row
    if not shown:
        return Text("no shared tokens", style="dim")
    out = Text()
    for i, w in enumerate(shown):
        out.append(", " if i else "")
        out.append(literal(repr(w["text"]), style="bold blue" if w["contribution"] > 0 else "bold red"))
        out.append(f" {w['contribution']:+.2g}", style="dim")
    return out


def print_generation(console: Console, view: dict, words: int) -> None:
    """The completion, each token's top supporting documents, then the proponent and opponent tables."""
    head = Text()
    head.append(literal(f"“{view['prompt']}", style="dim"))
    head.append(literal(f"{view['completion']}”", style="bold"))
    head.append("  (generated by the final checkpoint)" if view["generated"] else "  (given completion)", style="dim")
    console.print(head)
    table = Table(title="completion tokens and the documents that most support each", title_justify="left", expand=True)
    table.add_column("token", width=12)
    table.add_column("score", justify="right", width=10, no_wrap=True)
    table.add_column("supporting document", ratio=3)
    table.add_column("shared tokens", ratio=2)
    for t in view["tokens"]:
        for j, s in enumerate(t["supporters"][:2]):
            table.add_row(literal(repr(t["text"])) if j == 0 else Text(""),
                          Text(f"{s['score']:+.3g}", style="blue" if s["score"] > 0 else "red"),
                          document_text(s), shared_tokens(s, words))
    console.print(table)
    for title, key in (("proponents of the completion (score > 0)", "proponents"),
                       ("opponents of the completion (score < 0)", "opponents")):
        table = Table(title=title, title_justify="left", expand=True)
        table.add_column("score", justify="right", width=10, no_wrap=True)
        table.add_column("id", width=8)
        table.add_column("training document", ratio=3)
        table.add_column("tokens that carry it", ratio=2)
        for n in view[key]:
            table.add_row(Text(f"{n['score']:+.3g}", style="blue" if n["score"] > 0 else "red"), literal(n["id"]),
                          document_text(n), shared_tokens(n, words))
        console.print(table)
