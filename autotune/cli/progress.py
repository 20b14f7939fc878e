"""Rendering for the CLI: progress of a run, its events and summary (rich)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from autotune.cli.text import esc
from autotune.events import Event, EventKind, RunStatus, describe_changes, fmt
from autotune.recovery.supervisor import Hooks, RunResult, Supervisor

__all__ = ["RunProgress", "describe_event", "exit_code", "run_summary"]


def exit_code(result: RunResult) -> int:
    """0 when the run ended stable, 3 when it diverged and was not recovered."""
    return 0 if result.status is RunStatus.COMPLETED else 3


def describe_event(event: Event | dict[str, Any]) -> str:
    """One line (rich markup) for an event."""
    e = event if isinstance(event, Event) else Event.from_dict(event)
    if e.kind is EventKind.DIVERGED:
        return f"[red]diverged[/] ({esc(e.reason)}) at epoch {e.epoch}: {esc(e.message)}"
    if e.kind is EventKind.RECOVERED:
        return (f"[yellow]recovered[/]: rolled back to epoch {e.rolled_back_to}; "
                f"{esc(describe_changes(e.changes))}")
    if e.kind is EventKind.GAVE_UP:
        return f"[red]gave up[/]: {esc(e.explanation)}"
    if e.kind is EventKind.ALARM:
        return f"[yellow]warning[/]: divergence alarm ({esc(e.reason)}) at epoch {e.epoch}: " \
               f"{esc(e.message)}"
    if e.kind is EventKind.RESUMED:
        return f"resumed at epoch {e.epoch} ({esc(e.reason)})"
    return f"{e.kind.value} at epoch {e.epoch}"


class RunProgress:
    """A progress bar over a run's steps with loss, validation loss, lr and samples/s."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}  "
                       "lr {task.fields[lr]}  {task.fields[sps]} samples/s"),
            TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("train", total=None, epoch="-", loss="-",
                                           val="-", lr="-", sps="-")

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def hooks(self) -> Hooks:
        return Hooks(on_start=self._start, on_step=self._step, on_epoch=self._epoch,
                     on_event=self._event)

    def _start(self, supervisor: Supervisor) -> None:
        self.progress.update(self.task, total=supervisor.epochs * supervisor.steps_per_epoch,
                             completed=supervisor.step, epoch=supervisor.epoch)

    def _step(self, step: int, loss: float, grad_norm: float | None) -> None:
        self.progress.update(self.task, completed=step + 1, loss=fmt(loss, ".4f"))

    def _epoch(self, record: dict[str, Any]) -> None:
        self.progress.update(self.task, epoch=record["epoch"], val=fmt(record["val_loss"], ".4f"),
                             sps=fmt(record.get("samples_per_s"), ".0f"),
                             lr=fmt(record.get("lr"), ".3g"), completed=record["step"])
        self.console.log(
            f"epoch {record['epoch']}: train {fmt(record['train_loss'], '.4f')}  "
            f"val {fmt(record['val_loss'], '.4f')}  cell acc "
            f"{fmt(record.get('val_cell_acc'), '.3f')} (copy "
            f"{fmt(record.get('val_copy_cell_acc'), '.3f')})  exact "
            f"{fmt(record.get('val_exact'), '.3f')}  lr {fmt(record.get('lr'), '.3g')}  "
            f"{fmt(record.get('samples_per_s'), '.0f')} samples/s")

    def _event(self, event: Event) -> None:
        self.console.log(describe_event(event))


def run_summary(console: Console, result: RunResult, path: Path) -> None:
    """The end of a run: status, best validation loss, what recovery changed."""
    status = {RunStatus.COMPLETED: "[green]stable[/]",
              RunStatus.DIVERGED: "[red]diverged[/] (recovery off)",
              RunStatus.GAVE_UP: "[red]gave up[/] (recovery budget spent)"}[result.status]
    alarms = sum(e.kind is EventKind.ALARM for e in result.events)
    watched = f"; {alarms} alarm(s)" if alarms else ""
    console.print(f"run {esc(path)}: {status}; best val_loss {result.best_val_loss:.4f} at epoch "
                  f"{result.best_epoch}; {result.divergences} divergence(s), "
                  f"{result.recoveries} recovery(ies){watched}.")
    scores = result.scores
    if "test_pass2" in scores:
        console.print(f"held-out test pairs ({scores['test_outputs']}): pass@2 "
                      f"{scores['test_pass2']:.3f}, pass@1 {scores['test_pass1']:.3f} "
                      f"({scores['test_views']} views voted); copying the input "
                      f"{scores['test_copy_pass']:.3f}")
    changed = result.changes
    if changed:
        console.print(f"effective configuration changes: {esc(describe_changes(changed))} "
                      f"(in {esc(path / 'effective_config.yaml')})")
    if result.status is not RunStatus.COMPLETED:
        console.print(f"see why: autotune diagnose {esc(path)}; continue: autotune resume "
                      f"{esc(path)}")
