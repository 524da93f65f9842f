"""The explorer's causal-LM view: ``POST /api/generate`` over a causal-LM index.

    POST /api/generate  {"prompt": "...", "completion": optional, "max_new_tokens": 8, "k": 5, "words": 5}

The answer is `tracinwe.report.generation.index_generation_view` (the JSON of ``tracinwe explain
--generate --index``) plus ``scale`` (the colour scale of the highlighted tokens) and ``seconds``:
the completion's tokens, each with its top supporting documents (shared tokens and their
contributions), and the completion's proponents and opponents, each with its score split by
completion token (``token_scores``, summing to its score).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from tracinwe.errors import TracInWEError

__all__ = ["GenerateRequest", "generation_answer", "MAX_PROMPT_CHARS", "MAX_NEW_TOKENS", "LM_ONLY", "CLASSIFIER_ONLY"]

MAX_PROMPT_CHARS = 5000
MAX_NEW_TOKENS = 64
LM_ONLY = ("this explorer serves a classifier index: /api/explain explains a prediction; /api/generate needs an index "
           "built on a causal-LM run (tracinwe index build --run-dir LM_RUN, then tracinwe serve IDX)")
CLASSIFIER_ONLY = ("this explorer serves a causal language model index: POST /api/generate {\"prompt\": ...} explains a "
                   "completion; /api/explain needs a classifier index")


def _text(value: str, name: str, fix: str, blank_ok: bool = False) -> str:
    if len(value) > MAX_PROMPT_CHARS:
        raise ValueError(f"{name} has {len(value)} characters; send at most {MAX_PROMPT_CHARS}")
    if not (value if blank_ok else value.strip()):
        raise ValueError(f"{name} is empty: {fix}")
    return value


class GenerateRequest(BaseModel):
    """The body of ``POST /api/generate``."""

    prompt: str = Field(..., description="The text the model continues.")
    completion: str | None = Field(None, description="The completion to explain; default: the final checkpoint's greedy one.")
    max_new_tokens: int = Field(8, ge=1, le=MAX_NEW_TOKENS, description="Tokens to generate (without a completion).")
    k: int = Field(5, ge=1, le=50, description="Proponents, opponents and supporters per token to return.")
    words: int = Field(5, ge=0, le=50, description="Shared tokens listed per document (all of them are highlighted).")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _text(value, "prompt", "type the text the model should continue")

    @field_validator("completion")
    @classmethod
    def _completion(cls, value: str | None) -> str | None:
        return None if value is None else _text(value, "completion", "leave it out to let the model generate one", blank_ok=True)


def generation_answer(index, request: GenerateRequest) -> dict:
    """The view of ``request`` over an open causal-LM index, with the colour ``scale`` of its highlighted tokens."""
    from tracinwe.report.generation import contribution_scale, index_generation_view

    if not index.is_causal_lm:
        raise TracInWEError(LM_ONLY)
    view = index_generation_view(index, request.prompt, request.completion, request.max_new_tokens, request.k,
                                 request.words)
    view["scale"] = contribution_scale(view)
    return view
