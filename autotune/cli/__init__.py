"""The `autotune` command: a thin typer app over the library (see `app`)."""

from autotune.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
