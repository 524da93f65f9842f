"""One shape for every evaluation result (case deletion, LDS, fixing mistakes).

A result is a file (``to_json``: everything, with the settings that made it), a
table for the documentation (``markdown``) and a table for the terminal
(``rich_table``). The CLI, the benchmarks and ``benchmarks/evaluation_tables.py``
use only these three.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class EvaluationResult(Protocol):
    """What `DeletionResult`, `LDSResult` and `FixResult` have in common."""

    def to_json(self) -> dict:
        """Every number of the result and its settings, JSON-serialisable."""
        ...

    def markdown(self) -> str:
        """The headline table as Markdown."""
        ...

    def rich_table(self, title: str = ...) -> Any:
        """The headline table as a `rich.table.Table`."""
        ...
