"""The `diagnose` command: read a run directory or a training log, print the findings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add `diagnose` to the app."""

    @app.command()
    def diagnose(
        target: Annotated[Path, typer.Argument(
            help="a run directory, or a training log of any trainer: CSV / JSON Lines, "
                 "Lightning metrics.csv, Keras CSVLogger, trainer_state.json, TensorBoard "
                 "events, a text log")],
        json_: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
        lr: Annotated[float | None, typer.Option(
            "--lr", help="intended peak learning rate")] = None,
        warmup_epochs: Annotated[float | None, typer.Option(
            help="intended warmup epochs")] = None,
        schedule: Annotated[str | None, typer.Option(help="cosine, linear or constant")] = None,
        epochs: Annotated[int | None, typer.Option(help="intended planned epochs")] = None,
        classes: Annotated[int | None, typer.Option(
            "--classes", help="number of output classes (the chance level is ln N)")] = None,
        column: Annotated[list[str] | None, typer.Option(
            "--column", help="map a column: NAME=THEIR_NAME, NAME one of epoch, step, "
                             "train_loss, val_loss, lr, grad_norm (repeatable)")] = None,
    ) -> None:
        """Explain why a run diverged (or that it is healthy), with the numbers and the fix."""
        from autotune.diagnose import (
            diagnose_report,
            parse_columns,
            render_source,
            render_text,
        )

        report = diagnose_report(target, lr, warmup_epochs, schedule, epochs,
                                 classes=classes, columns=parse_columns(column or []))
        if json_:
            typer.echo(json.dumps(report.to_dict(), indent=2))
        else:
            typer.echo(render_source(report.source) + "\n\n" + render_text(report.findings))
