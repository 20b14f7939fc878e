"""The supervisor's hooks for one search trial: report, prune, triage, keep the timeline.

What each hook does for Optuna is in `autotune.search.objective`'s docstring; this module
holds them so that the objective is about running a trial and recording what survived.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError

from autotune.events import Event, EventKind, surviving
from autotune.jsonio import as_float, jsonable
from autotune.recovery.rundir import RunDir
from autotune.recovery.supervisor import Hooks, PlannedRollback, Supervisor
from autotune.search.study import ownership
from autotune.search.triage import fresh_trial, peer_values, triage
from autotune.search.vocabulary import EventSink, SearchEvent, SearchEventKind, TrialAttr

__all__ = ["TrialRecorder"]


class TrialRecorder:
    """The supervisor's hooks for one trial: report, prune, keep the timeline."""

    def __init__(self, trial: optuna.Trial, run_path: Path, emit: EventSink,
                 triage: bool = True) -> None:
        self.trial = trial
        self.run_path = run_path
        self.emit = emit
        self.triage = triage
        self.triaged: list[dict[str, Any]] = list(trial.user_attrs.get(TrialAttr.TRIAGE) or [])
        self.timeline: list[list[int]] = []
        self.reported: set[int] = set()
        self.synced = TrialAttr.TIMELINE in trial.user_attrs  # a retry inherits the killed trial's
        self.supervisor: Supervisor | None = None
        self.pruned_reason: str | None = None
        self.claim = ownership.claim(trial)  # a hung worker notices a takeover

    def hooks(self) -> Hooks:
        return Hooks(on_start=self.on_start, on_epoch=self.on_epoch, on_event=self.on_event,
                     before_rollback=self.before_rollback if self.triage else None)

    def on_start(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.replay()

    def replay(self) -> None:
        """Report what the run did before (a retried trial continues a killed one's run)."""
        records = RunDir(self.run_path).metrics()
        for record in records:
            self._report(record)
        self.timeline = [[int(r["global_epoch"]), int(r["epoch"])] for r in surviving(records)]
        self._sync()

    def _sync(self) -> None:
        """Store the timeline once it differs from the reports (after a rollback): until
        then every report is on it, which is what the pruner assumes without the attribute
        (one storage write an epoch saved)."""
        if self.synced or any(g != e for g, e in self.timeline):
            self.trial.set_user_attr(TrialAttr.TIMELINE, self.timeline)
            self.synced = True

    def _report(self, record: Mapping[str, Any]) -> float:
        value = as_float(record["val_loss"])
        step = int(record["global_epoch"])
        if math.isfinite(value) and step not in self.reported:
            self.trial.report(value, step=step)
            self.reported.add(step)
        return value

    def _owned_report(self, record: Mapping[str, Any]) -> float:
        """`_report`, refused when the trial was taken over while this process hung (write
        nothing more). A report is itself that check: Optuna's storages refuse a report to a
        finished trial (an RDB storage in the report's own transaction; a journal keeps the
        line, which every reader ignores). An epoch that reports nothing (a value that is
        not finite, a step already reported) asks the storage on its own."""
        reported = len(self.reported)
        try:
            value = self._report(record)
        except UpdateFinishedTrialError:
            ownership.check(self.claim)  # finished by another worker: TrialTaken
            raise
        if len(self.reported) == reported:
            ownership.check(self.claim)
        return value

    def on_epoch(self, record: dict[str, Any]) -> None:
        value = self._owned_report(record)
        epoch = int(record["epoch"])
        self.timeline = [p for p in self.timeline if p[1] < epoch]
        self.timeline.append([int(record["global_epoch"]), epoch])
        self._sync()
        self.emit(SearchEvent(SearchEventKind.EPOCH, self.trial.number, {
            "epoch": epoch, "global_epoch": int(record["global_epoch"]), "val_loss": value,
            "train_loss": as_float(record.get("train_loss")),
            "epochs": self.supervisor.epochs if self.supervisor else None}))
        if self.trial.should_prune():
            self.pruned_reason = (f"pruned by the pruner at epoch {epoch} (val_loss "
                                  f"{value:.4f} worse than other trials at that epoch)")
            raise optuna.TrialPruned(self.pruned_reason)

    def before_rollback(self, planned: PlannedRollback) -> None:
        """Recover or prune (`autotune.search.triage`): record the choice, and prune a trial
        whose rolled-back state is not competitive."""
        trials = self.trial.study.get_trials(deepcopy=False)
        planned_epochs = self.supervisor.epochs if self.supervisor else planned.epoch
        decision = triage(planned.epoch, planned.best_val_loss,
                          peer_values(trials, self.trial.number, planned.epoch),
                          remaining=planned_epochs - planned.epoch,
                          fresh=fresh_trial(trials, self.trial.number, planned_epochs))
        self.triaged.append({"divergence": planned.reason, **decision.to_dict()})
        self.trial.set_user_attr(TrialAttr.TRIAGE, jsonable(self.triaged))
        self.emit(SearchEvent(SearchEventKind.TRIAGE, self.trial.number, {
            "choice": decision.choice, "why": decision.reason, "divergence": planned.reason,
            "epoch": planned.epoch}))
        if not decision.recover:
            self.pruned_reason = (f"diverged ({planned.reason}) and pruned instead of "
                                  f"recovered: {decision.reason}")
            raise optuna.TrialPruned(self.pruned_reason)

    def on_event(self, event: Event) -> None:
        if event.kind is EventKind.RECOVERED and event.rolled_back_to is not None:
            back = int(event.rolled_back_to)
            self.timeline = [p for p in self.timeline if p[1] <= back]
            self.synced = True  # from now on the reports hold undone values
            self._sync()
        record = event.to_dict()
        self.emit(SearchEvent(SearchEventKind.RECOVERY, self.trial.number, jsonable(
            {k: record.get(k) for k in ("kind", "reason", "epoch", "global_epoch", "message",
                                        "rolled_back_to", "changes", "explanation")})))
