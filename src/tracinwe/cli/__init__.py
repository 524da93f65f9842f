"""The `tracinwe` command line (typer). Each command group lives in its own module."""

from tracinwe.cli.app import app

__all__ = ["app"]
