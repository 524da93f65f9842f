"""`create_app(index)`: the explorer page and its JSON API.

    GET  /                 the page (self-contained: inline CSS and vanilla JS)
    POST /api/explain      {"text": "...", "label": optional name or index, "k": 5, "words": 5}
    POST /api/generate     {"prompt": "...", "completion": optional, "max_new_tokens": 8, "k": 5, "words": 5}
    GET  /api/suspicious   ?k=20: training examples by self-influence, highest first
    GET  /api/health       index size, labels, checkpoints (and "task": "causal-lm" on an LM index)

A classifier index serves the classifier page and ``/api/explain``; a causal-LM index
(manifest ``"task": "causal-lm"``) serves the completion page and ``/api/generate``
(`tracinwe.web.generation`). The other task's endpoint answers 400 with a one-line message.

Bad requests get a 4xx JSON ``{"detail": "one line"}``; an unexpected failure is
a 500 with the same shape, and the server keeps serving. Queries run one at a
time (the model is not shared between threads).

Before any route runs, a request whose ``Host`` is not a trusted name gets 400 and a
body over 64 KB gets 413 unread (`tracinwe.web.guards`). No page loads a script from
another origin (no Swagger UI; the schema is at /api/openapi.json).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from importlib.resources import files
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, field_validator

from tracinwe.errors import TracInWEError
from tracinwe.report.html import aligning_tokenizer
from tracinwe.report.style import CSS
from tracinwe.report.view import result_view, suspicious_view
from tracinwe.web.generation import CLASSIFIER_ONLY, LM_ONLY, GenerateRequest, generation_answer
from tracinwe.web.guards import MAX_BODY_BYTES, RequestGuard

__all__ = ["create_app", "ExplainRequest", "MAX_TEXT_CHARS", "MAX_LABEL_CHARS"]

MAX_TEXT_CHARS = 5000
MAX_LABEL_CHARS = 200


class ExplainRequest(BaseModel):
    """The body of ``POST /api/explain``."""

    text: str = Field(..., description="The text to explain.")
    label: Annotated[int, Field(ge=-(2**31), le=2**31)] | Annotated[str, Field(max_length=MAX_LABEL_CHARS)] | None = Field(
        None, description="Explain this label (name or index); default: the prediction.")
    k: int = Field(5, ge=1, le=50, description="Proponents and opponents to return.")
    words: int = Field(5, ge=0, le=50, description="Top words listed per neighbour (all shared words are highlighted).")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty: type a sentence")
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"text has {len(value)} characters; send at most {MAX_TEXT_CHARS}")
        return value


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts) or "invalid request"


def _page(name: str) -> str:
    """A page of ``web/static`` with the report's CSS and the shared script inlined (no request leaves the page)."""
    static = files("tracinwe.web").joinpath("static")
    template = static.joinpath(name).read_text(encoding="utf-8")
    return template.replace("/*CSS*/", CSS).replace("/*COMMON_JS*/", static.joinpath("common.js").read_text(encoding="utf-8"))


def create_app(index, preload: bool = True, hosts: Iterable[str] = ()) -> FastAPI:
    """The explorer over an open `tracinwe.index.Index`.

    ``preload``: keep its checkpoints in memory and answer one warm-up query, so that each
    request costs one forward and backward pass per checkpoint plus the index lookup.
    ``hosts``: names trusted in the ``Host`` header besides 127.0.0.1, localhost and ::1.
    A causal-LM index gets the completion view (`tracinwe.web.generation`).
    """
    lm = index.is_causal_lm
    if preload:
        index.tracin.keep_loaded()
        # first-call costs (page cache, allocator) paid before the first user
        if lm:
            generation_answer(index, GenerateRequest(prompt="warm", completion=" up", k=1, words=0))
        else:
            index.query(["warm up"], k=1, words=1)
    app = FastAPI(title="tracinwe explorer", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(RequestGuard, hosts=list(hosts), max_body=MAX_BODY_BYTES)
    lock = threading.Lock()
    tokenizer, max_length = aligning_tokenizer(index.tracin)
    names = list(index.label_names)
    page = _page("generation.html" if lm else "explorer.html")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content={"detail": _one_line(exc)})

    @app.exception_handler(TracInWEError)
    async def _bad_input(request, exc: TracInWEError):
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def _failure(request, exc: Exception):
        first = (str(exc).strip().splitlines() or [""])[0]
        return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__}: {first})"})

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "examples": len(index), "label_names": names,
                "checkpoints": len(index.tracin.checkpoints), "max_length": max_length, **({"task": "causal-lm"} if lm else {})}

    if lm:
        _generation_routes(app, index, lock)
    else:
        _classifier_routes(app, index, lock, tokenizer, names, max_length)

    @app.get("/api/suspicious")
    def suspicious(k: int = Query(20, ge=1, le=1000)) -> list[dict]:
        with lock:
            found = index.suspicious(k=k, words=0)
        return suspicious_view(found)

    app.state.index = index
    return app


def _classifier_routes(app: FastAPI, index, lock: threading.Lock, tokenizer, names: list[str], max_length: int) -> None:
    """``POST /api/explain`` (a classifier's prediction explained); ``/api/generate`` is refused."""

    @app.post("/api/explain")
    def explain(request: ExplainRequest) -> dict:
        label = None
        if request.label is not None:
            label = _label_id(request.label, names)
        started = time.perf_counter()
        with lock:
            (result,) = index.query([request.text], None if label is None else [label], k=request.k, words=None)
        view = result_view(result, tokenizer, names, max_length, request.words, gold=label is not None)
        view["seconds"] = time.perf_counter() - started
        return view

    @app.post("/api/generate", include_in_schema=False)
    def generate_refused() -> dict:  # no body read: the index's task is the problem, whatever was sent
        raise TracInWEError(LM_ONLY)


def _generation_routes(app: FastAPI, index, lock: threading.Lock) -> None:
    """``POST /api/generate`` (a completion explained token by token); ``/api/explain`` is refused."""

    @app.post("/api/generate")
    def generate(request: GenerateRequest) -> dict:
        started = time.perf_counter()
        with lock:
            view = generation_answer(index, request)
        view["seconds"] = time.perf_counter() - started
        return view

    @app.post("/api/explain", include_in_schema=False)
    def explain_refused() -> dict:  # no body read: the index's task is the problem, whatever was sent
        raise TracInWEError(CLASSIFIER_ONLY)


def _label_id(label: int | str, names: list[str]) -> int:
    from tracinwe.errors import LabelError

    if isinstance(label, str) and label in names:
        return names.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
        return label
    raise LabelError(f"label {label!r} is not one of {names}: send a class name or an index 0..{len(names) - 1}")
