"""How an index stores language-model documents: a display text and, for non-strings, the example as JSON.

A causal-LM index has no labels (the text is its own target). Its examples table holds ``id``,
``text`` (what a person reads: the document, a prompt followed by its completion, or a chat's
messages one per line) and ``example`` (the prompt/completion dict or chat as JSON; null for a
plain string), so the exact example is given back to the model when its tokens are needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

#: The examples-table column that holds a non-string LM example as JSON.
EXAMPLE_COLUMN = "example"


def display_text(example) -> str:
    """The readable text of an LM example (a string, a prompt/completion dict, a chat)."""
    if isinstance(example, str):
        return example
    if isinstance(example, Mapping):
        return str(example.get("prompt", "")) + str(example.get("completion", ""))
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in example)


def encoded(example) -> str | None:
    """The example as canonical JSON, or None for a plain string (the text column holds it)."""
    if isinstance(example, str):
        return None
    if isinstance(example, Mapping):
        return json.dumps(dict(example), sort_keys=True, ensure_ascii=False)
    return json.dumps([dict(m) for m in example], sort_keys=True, ensure_ascii=False)


def canonical(example) -> str:
    """One string per example for the input hash: the text itself, or its JSON."""
    value = encoded(example)
    return example if value is None else value


def decoded(texts: Sequence[str], values: Sequence[str | None]) -> list:
    """The stored examples back: the JSON where there is one, else the text."""
    return [t if v is None else json.loads(v) for t, v in zip(texts, values)]
