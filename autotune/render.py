"""Rendering for the CLI: progress of a run, its events and summary (rich)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from autotune.supervisor import COMPLETED, Hooks, RunResult
from trainer.loop import StepInfo, Trainer


def exit_code(result: RunResult) -> int:
    """0 when the run ended stable, 3 when it diverged and was not recovered."""
    return 0 if result.status == COMPLETED else 3


def describe_changes(changes: dict[str, Any]) -> str:
    """`learning_rate 0.003 -> 0.001, label_smoothing 0.1 -> 0.0`, or `none`."""
    return ", ".join(f"{k} {_fmt(v[0])} -> {_fmt(v[1])}" for k, v in changes.items()) or "none"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} steps]"
    return str(value)


def describe_event(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "diverged":
        return f"[red]diverged[/] ({event['reason']}) at epoch {event['epoch']}: " \
               f"{event.get('message', '')}"
    if kind == "recovered":
        return (f"[yellow]recovered[/]: rolled back to epoch {event['rolled_back_to']}; "
                f"{describe_changes(event.get('changes', {}))}")
    if kind == "gave_up":
        return f"[red]gave up[/]: {event.get('explanation', '')}"
    if kind == "resumed":
        return f"resumed at epoch {event['epoch']} ({event.get('reason')})"
    return str(event)


class RunProgress:
    """A progress bar over a run's steps with loss, validation loss, lr and samples/s."""

    def __init__(self, console: Console, epochs: int | None) -> None:
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

    def _start(self, trainer: Trainer) -> None:
        self.progress.update(self.task, total=trainer.config.epochs * trainer.steps_per_epoch,
                             completed=trainer.step, epoch=trainer.epoch)

    def _step(self, info: StepInfo) -> None:
        self.progress.update(self.task, completed=info.step + 1, loss=f"{info.loss:.4f}",
                             lr=f"{info.lr:.3g}")

    def _epoch(self, record: dict[str, Any]) -> None:
        self.progress.update(self.task, epoch=record["epoch"], val=f"{record['val_loss']:.4f}",
                             sps=f"{record['samples_per_s']:.0f}", completed=record["step"])
        self.console.log(f"epoch {record['epoch']}: train {record['train_loss']:.4f}  "
                         f"val {record['val_loss']:.4f}  cell acc {record['val_cell_acc']:.3f}"
                         f" (copy {record['copy_cell_acc']:.3f})  exact "
                         f"{record['val_exact']:.3f}  lr {record['lr']:.3g}  "
                         f"{record['samples_per_s']:.0f} samples/s")

    def _event(self, event: dict[str, Any]) -> None:
        self.console.log(describe_event(event))


def run_summary(console: Console, result: RunResult, path: Path) -> None:
    """The end of a run: status, best validation loss, what recovery changed."""
    status = {"completed": "[green]stable[/]", "diverged": "[red]diverged[/] (recovery off)",
              "gave_up": "[red]gave up[/] (recovery budget spent)"}[result.status]
    console.print(f"run {path}: {status}; best val_loss {result.best_val_loss:.4f} at epoch "
                  f"{result.best_epoch}; {result.divergences} divergence(s), "
                  f"{result.recoveries} recovery(ies).")
    changed = result.changes
    if changed:
        console.print(f"effective configuration changes: {describe_changes(changed)} "
                      f"(in {path / 'effective_config.yaml'})")
    if result.status != COMPLETED:
        console.print(f"see why: autotune diagnose {path}; continue: autotune resume {path}")
