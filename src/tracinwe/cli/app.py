"""The typer application: built here, with every command module's commands registered in one place.

Command modules import only `tracinwe.cli.common`, never this module; each exposes
``register(app)``. The order of `COMMAND_MODULES` sets the order of ``tracinwe --help``
(typer lists the commands first, then the command groups such as ``index`` and ``evaluate``).
"""

from __future__ import annotations

import typer

from tracinwe.cli import commands_core, commands_diagnostics, commands_evaluate, commands_index, commands_product

COMMAND_MODULES = (commands_core, commands_product, commands_index, commands_evaluate, commands_diagnostics)


def build_app() -> typer.Typer:
    """A fresh `tracinwe` application with every command registered."""
    application = typer.Typer(
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

    @application.callback()
    def main() -> None:
        """Which training examples made your text classifier say this, and through which words."""

    for module in COMMAND_MODULES:
        module.register(application)
    return application


app = build_app()
