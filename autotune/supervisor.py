"""A supervised run: train, detect divergence, roll back, change the cause, carry on.

This is the one place where the trainer, the detectors and the recovery policy meet the
run directory. `autotune train`, `autotune resume` and every search trial go through
`Supervisor.fit`. The trainer is anything with the small protocol of `trainer.loop.Trainer`:
`train_epoch(on_step)`, `evaluate("val")`, `state_dict()`, `load_state_dict(...)`,
`apply_changes(...)` and the counters `epoch`, `global_epoch`, `step`, `config`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autotune.divergence import (
    DetectorConfig,
    Reason,
    Verdict,
    check_epoch,
    check_nonfinite,
    check_step,
    detector_config,
)
from autotune.recovery import Decision, decide, recovery_config
from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.errors import Interrupted
from trainer.loop import Diverged, StepInfo, Trainer
from trainer.rundir import RunDir, as_float

log = logging.getLogger(__name__)

COMPLETED, DIVERGED, GAVE_UP = "completed", "diverged", "gave_up"


@dataclass
class Hooks:
    """Optional observers; `on_epoch` may raise (an Optuna prune) to stop the run."""

    on_start: Callable[[Trainer], None] | None = None
    on_step: Callable[[StepInfo], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_event: Callable[[dict[str, Any]], None] | None = None


@dataclass
class RunResult:
    """How a supervised run ended and what survived."""

    status: str                       # completed, diverged (recovery off) or gave_up
    config: TrainConfig               # the effective configuration at the end
    best_val_loss: float
    best_epoch: int | None
    final: dict[str, Any]             # the last epoch's metrics record
    events: list[dict[str, Any]] = field(default_factory=list)
    divergences: int = 0
    recoveries: int = 0
    global_epochs: int = 0

    @property
    def stable(self) -> bool:
        return self.status == COMPLETED

    @property
    def changes(self) -> dict[str, list[Any]]:
        return changes_of(self.events)


def changes_of(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Every key recovery changed: [value before the first change, value after the last]."""
    changed: dict[str, list[Any]] = {}
    for event in events:
        if event.get("kind") != "recovered":
            continue
        for key, (old, new) in event.get("changes", {}).items():
            changed[key] = [changed.get(key, [old])[0], new]
    return changed


def timeline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics of the current logical timeline: a record whose epoch goes back
    (after a rollback) replaces the records it undid."""
    out: list[dict[str, Any]] = []
    for record in records:
        while out and out[-1]["epoch"] >= record["epoch"]:
            out.pop()
        out.append(record)
    return out


def _best(infos: list[checkpoint.CheckpointInfo]) -> checkpoint.CheckpointInfo | None:
    finite = [i for i in infos if math.isfinite(i.val_loss)]
    return min(finite, key=lambda i: i.val_loss) if finite else None


class Supervisor:
    """Runs a trainer to its planned epochs in a run directory, recovering on divergence."""

    def __init__(self, trainer: Trainer, run: RunDir, hooks: Hooks | None = None) -> None:
        self.trainer = trainer
        self.run = run
        self.hooks = hooks or Hooks()
        self.history = timeline(run.metrics())
        self.events = run.events()
        self.pending: Verdict | None = None
        self._detector_cache: tuple[TrainConfig, DetectorConfig] | None = None

    def _detectors(self) -> DetectorConfig:
        """The thresholds for the configuration in force (rebuilt only when it changes: this
        runs every step). A trainer may tell the loss of a model that knows nothing and of
        one that knows only the class frequencies (optional protocol; the latter depends on
        the configuration)."""
        t = self.trainer
        if self._detector_cache is None or self._detector_cache[0] is not t.config:
            self._detector_cache = (t.config, detector_config(
                t.config, getattr(t, "chance_loss", None), getattr(t, "marginal_loss", None),
                getattr(t, "train_marginal_loss", None)))
        return self._detector_cache[1]

    # -- effects at the edges ------------------------------------------------------------

    def record_event(self, event: dict[str, Any]) -> None:
        """Append an event to events.jsonl and tell the observer."""
        self.run.append_event(event)
        self.events.append(event)
        if self.hooks.on_event:
            self.hooks.on_event(event)

    def _save(self, val_loss: float) -> None:
        t = self.trainer
        checkpoint.save(self.run.checkpoints, t.state_dict(), global_epoch=t.global_epoch,
                        epoch=t.epoch, step=t.step, val_loss=val_loss)
        infos = checkpoint.listing(self.run.checkpoints)
        best = _best(infos)
        # The initial weights stay too: a rollback to the very start is always possible.
        checkpoint.prune(self.run.checkpoints, t.config.keep_checkpoints,
                         keep={0} | ({best.global_epoch} if best else set()))

    def start(self) -> None:
        """Save the initial state (epoch 0), so a rollback to the very start is possible."""
        self._save(math.inf)

    # -- detection -----------------------------------------------------------------------

    def _step_check(self, info: StepInfo) -> Verdict | None:
        if self.hooks.on_step:
            self.hooks.on_step(info)
        verdict = check_step(self.trainer.step_losses, self.trainer.step_grad_norms,
                             info.step, self._detectors())
        return verdict if verdict.diverged else None

    def _verdict_of(self, exc: Diverged) -> Verdict:
        if isinstance(exc.detail, Verdict):
            return exc.detail
        # The trainer refused a non-finite step: the detector words it, as for any trainer.
        return check_nonfinite(exc.loss, exc.grad_norm, exc.step) or Verdict(
            True, Reason(exc.reason), str(exc), step=exc.step)

    # -- recovery ------------------------------------------------------------------------

    def _diverged(self, verdict: Verdict) -> str | None:
        """Record a divergence and recover; returns a final status, or None to carry on."""
        t = self.trainer
        self.record_event({"kind": "diverged", "reason": verdict.reason.value, "epoch": t.epoch,
                           "global_epoch": t.global_epoch, "step": verdict.step,
                           "message": verdict.message, "evidence": dict(verdict.evidence),
                           "rolled_back_to": None, "changes": {}})
        if not t.config.recovery:
            return DIVERGED
        return self.recover(verdict)

    def recover(self, verdict: Verdict) -> str | None:
        """Apply the policy to a verdict: roll back and change, or give up."""
        t = self.trainer
        infos = checkpoint.listing(self.run.checkpoints)
        best = _best(infos)
        # The budget counts recoveries since the run was last resumed by hand.
        resumed = max((i for i, e in enumerate(self.events) if e.get("kind") == "resumed"),
                      default=-1)
        past = [e for e in self.events[resumed + 1:] if e.get("kind") == "recovered"]
        decision: Decision = decide(verdict, t.config, past, [i.epoch for i in infos],
                                    best.epoch if best else None, t.steps_per_epoch,
                                    recovery_config(t.config))
        if decision.give_up:
            self.record_event({**decision.to_event(), "kind": "gave_up", "epoch": t.epoch,
                               "global_epoch": t.global_epoch, "rolled_back_to": None})
            return GAVE_UP
        loaded = checkpoint.load_latest(self.run.checkpoints, epoch=decision.rollback_to,
                                        map_location=t.device)
        if loaded is None:
            raise RuntimeError(f"no valid checkpoint of epoch {decision.rollback_to} to "
                               f"roll back to in {self.run.checkpoints}")
        info, state = loaded
        t.load_state_dict(state, keep_config=True, keep_counters=True)
        checkpoint.discard_after(self.run.checkpoints, info.global_epoch)
        t.apply_changes({key: new for key, (_, new) in decision.changes.items()})
        self.run.write_effective(t.config)
        self.history = [r for r in self.history if r["epoch"] <= info.epoch]
        self.record_event({**decision.to_event(), "kind": "recovered", "epoch": info.epoch,
                           "global_epoch": t.global_epoch, "rolled_back_to": info.epoch,
                           "step": t.step})
        return None

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> RunResult:
        """Train to the planned epochs; stop early on an unrecovered divergence."""
        t = self.trainer
        status = COMPLETED
        if self.hooks.on_start:
            self.hooks.on_start(t)
        if self.pending is not None:
            verdict, self.pending = self.pending, None
            status = self.recover(verdict) or COMPLETED
        try:
            while status == COMPLETED and t.epoch < t.config.epochs:
                status = self._one_epoch() or COMPLETED
        except (KeyboardInterrupt, Interrupted):
            # What was saved stays: the last epoch's checkpoint and its metrics.
            self.record_event({"kind": "interrupted", "reason": "interrupted", "epoch": t.epoch,
                               "global_epoch": t.global_epoch, "rolled_back_to": None,
                               "changes": {}})
            raise
        return self.result(status)

    def _one_epoch(self) -> str | None:
        t = self.trainer
        start = time.perf_counter()
        try:
            train = t.train_epoch(on_step=self._step_check)
        except Diverged as exc:
            t.global_epoch += 1  # the partial epoch was compute spent
            return self._diverged(self._verdict_of(exc))
        val = t.evaluate("val")
        record = {"epoch": t.epoch, "global_epoch": t.global_epoch, "step": t.step,
                  "steps_per_epoch": t.steps_per_epoch, "train_loss": train["train_loss"],
                  "val_loss": val["val_loss"], "val_cell_acc": val["val_cell_acc"],
                  "val_exact": val["val_exact"], "lr": train["lr"],
                  "grad_norm": train["grad_norm"], "time_s": time.perf_counter() - start,
                  "train_loss_max": train["train_loss_max"],
                  "grad_norm_max": train["grad_norm_max"],
                  "samples_per_s": train["samples_per_s"],
                  "copy_cell_acc": val["val_copy_cell_acc"],
                  "copy_exact": val["val_copy_exact"],
                  "marginal_loss": getattr(t, "marginal_loss", None),
                  "train_marginal_loss": getattr(t, "train_marginal_loss", None)}
        self.run.append_metrics(record)
        self.history.append(record)
        verdict = check_epoch(self.history, self._detectors())
        if verdict.diverged:
            return self._diverged(verdict)
        self._save(val["val_loss"])
        if self.hooks.on_epoch:
            self.hooks.on_epoch(record)
        return None

    def result(self, status: str) -> RunResult:
        t = self.trainer
        vals = [as_float(r["val_loss"]) for r in self.history]
        finite = [(v, r["epoch"]) for v, r in zip(vals, self.history) if math.isfinite(v)]
        best_val, best_epoch = min(finite) if finite else (math.inf, None)
        return RunResult(
            status=status, config=t.config, best_val_loss=best_val, best_epoch=best_epoch,
            final=self.history[-1] if self.history else {}, events=list(self.events),
            divergences=sum(e.get("kind") == "diverged" for e in self.events),
            recoveries=sum(e.get("kind") == "recovered" for e in self.events),
            global_epochs=t.global_epoch)
