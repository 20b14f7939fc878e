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
        follow: Annotated[bool, typer.Option(
            "--follow", help="read TARGET as another process writes it (CSV, JSON Lines, "
                             "text) and print each finding once, as it appears")] = False,
        idle: Annotated[float, typer.Option(
            "--idle", help="with --follow: return when TARGET has not grown for this many "
                           "seconds (exit 0)")] = 300.0,
        fail_on: Annotated[str | None, typer.Option(
            "--fail-on", help="with --follow: exit 3 at the first finding of this severity: "
                              "error or warning")] = None,
    ) -> None:
        """Explain why a run diverged (or that it is healthy), with the numbers and the fix."""
        if fail_on is not None and not follow:
            from autotune.errors import ConfigError

            raise ConfigError("--fail-on needs --follow (it says when following stops).")
        if follow:
            _follow(target, json_, lr, warmup_epochs, schedule, epochs, classes, column or [],
                    idle, fail_on)
            return
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


def _follow(target: Path, json_: bool, lr: float | None, warmup_epochs: float | None,
            schedule: str | None, epochs: int | None, classes: int | None,
            column: list[str], idle: float, fail_on: str | None) -> None:
    """`diagnose --follow`: each finding printed (and flushed) the moment it appears."""
    from autotune.diagnose import Finding, parse_columns
    from autotune.diagnose.follow import Outcome, follow, position
    from autotune.diagnose.intended import check_classes

    check_classes(classes)
    columns = parse_columns(column)

    def report(found: Finding) -> None:
        where = position(found)
        if json_:
            typer.echo(json.dumps({**found.to_dict(), **where}))
            return
        label = " ".join(f"{k} {v:g}" for k, v in where.items())
        typer.echo(f"[{found.severity.value.upper()}] {label + ' ' if label else ''}"
                   f"{found.code.value}: {found.message}\n  Fix: {found.fix}\n")

    flags = {"learning_rate": lr, "warmup_epochs": warmup_epochs, "schedule": schedule,
             "epochs": epochs}
    result = follow(target, flags, classes=classes, columns=columns, idle=idle,
                    fail_on=fail_on, report=report)
    if result.outcome is Outcome.FAILED:
        typer.echo(f"autotune: {result.reported[-1].code.value} ({fail_on} or worse): "
                   f"exit 3.", err=True)
        raise typer.Exit(3)
    typer.echo(f"autotune: {target} has not grown for {idle:g} s: {result.rows} rows read, "
               f"{len(result.reported)} findings.", err=True)
