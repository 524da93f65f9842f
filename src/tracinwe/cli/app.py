"""The typer application; command modules attach their commands to it on import."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="tracinwe",
    help=(
        "Which training examples made your text classifier say this, and through which words.\n\n"
        "TracIn-WE scores each training example by the dot product of its word-embedding gradient "
        "with the test example's, summed over checkpoints: > 0 is a proponent, < 0 an opponent."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Which training examples made your text classifier say this, and through which words."""


# Command modules register themselves on `app`; import order sets the --help order.
from tracinwe.cli import commands_core, commands_product, commands_index  # noqa: E402,F401
from tracinwe.cli import commands_evaluate, commands_diagnostics  # noqa: E402,F401
