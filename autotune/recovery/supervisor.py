"""A supervised run: train, detect divergence, roll back, change the cause, carry on.

This is the one place where a trainer, the detectors and the recovery policy meet the run
directory. `autotune train`, `autotune resume`, every search trial and `autotune.supervise`
(`autotune.recovery.supervise`) go through `Supervisor.fit`. The trainer is any
`Trainable`; the supervisor keeps what must never depend on it: the logical and compute
epoch counters, the per-step losses the step detectors read, the checkpoints (the
trainer's state under `trainer`, the supervisor's under `supervisor`) and the effective
configuration.

After a rollback the trainer's older state is loaded and then every hyperparameter in
force before it is applied again with the decision's changes, so an older state never
brings back an older configuration.

Checkpoints and metrics lines are written off the training thread and the rollback
targets kept in memory (`autotune.recovery.checkpoints.BackgroundCheckpoints`); `fit`
waits for the writes before the run ends.

`fit` runs the loop. A framework that runs its own loop (`autotune.integrations`) calls
the loop's pieces from its hooks instead: `begin_epoch`, `on_step` for every step,
`diverged` for a step that raised `StepDiverged`, `end_epoch` after every validation;
its checkpoints then stay in memory (`autotune.recovery.checkpoints.MemoryCheckpoints`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from autotune.detect import (
    DetectorConfig,
    Verdict,
    check_epoch,
    check_step,
    detector_config,
)
from autotune.errors import Interrupted
from autotune.events import Event, EventKind, RunStatus, surviving
from autotune.jsonio import as_float, jsonable
from autotune.recovery import checkpoint_files, lr_check
from autotune.recovery.checkpoints import BackgroundCheckpoints, CheckpointStore
from autotune.recovery.policy import RecoveryConfig, decide
from autotune.recovery.results import PlannedRollback, RunResult, StepDiverged
from autotune.recovery.rundir import RunDir
from autotune.recovery.settings import RecoveryMode, SupervisorConfig
from autotune.recovery.threads import CoreShare
from autotune.recovery.trainable import Trainable

__all__ = ["Hooks", "PlannedRollback", "RunResult", "StepDiverged", "Supervisor"]

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Per-step values kept for the step detectors (their windows are 50 steps).
STEP_HISTORY = 256


@dataclass
class Hooks:
    """Optional observers; `on_epoch` may raise (an Optuna prune) to stop the run, and so
    may `before_rollback` (to stop a run rather than roll it back: a search prunes a trial
    whose rolled-back state is not worth continuing, `autotune.search.triage`)."""

    on_start: Callable[[Supervisor], None] | None = None
    on_step: Callable[[int, float, float | None], None] | None = None
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    on_event: Callable[[Event], None] | None = None
    before_rollback: Callable[[PlannedRollback], None] | None = None


def _best(infos: list[checkpoint_files.CheckpointInfo]) -> checkpoint_files.CheckpointInfo | None:
    finite = [i for i in infos if math.isfinite(i.val_loss)]
    return min(finite, key=lambda i: i.val_loss) if finite else None


def _from_version_0(state: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint written before the supervisor kept its own state (the ARC trainer's
    state alone, with the counters in it)."""
    return {"trainer": state, "supervisor": {
        "version": STATE_VERSION, "epoch": state["epoch"], "global_epoch": state["global_epoch"],
        "step": state["step"], "steps_per_epoch": 0,
        "step_losses": list(state.get("step_losses", []))[-STEP_HISTORY:],
        "step_grad_norms": list(state.get("step_grad_norms", []))[-STEP_HISTORY:],
        "hparams": {}}}


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return not math.isclose(a, float(b), rel_tol=1e-12, abs_tol=0.0)
    return a != b


class Supervisor:
    """Runs a trainer to its planned epochs in a run directory, per its settings."""

    def __init__(self, trainer: Trainable, run: RunDir, *, epochs: int,
                 settings: SupervisorConfig | None = None, policy: RecoveryConfig | None = None,
                 hooks: Hooks | None = None, config: Mapping[str, Any] | None = None,
                 checkpoints: CheckpointStore | None = None) -> None:
        self.trainer = trainer
        self.run = run
        self.checkpoints: CheckpointStore = (BackgroundCheckpoints(run.checkpoints)
                                             if checkpoints is None else checkpoints)
        self.epochs = int(epochs)
        self.settings = settings or SupervisorConfig()
        self.policy = policy or RecoveryConfig(max_recoveries=self.settings.max_recoveries)
        self.hooks = hooks or Hooks()
        self.base_config = dict(config) if config is not None else run.effective_config()
        self.history = surviving(run.metrics())
        self.events = run.events()
        self._pending: Verdict | None = None
        self.epoch = 0
        self.global_epoch = 0
        self.step = 0
        self.step_losses: deque[float] = deque(maxlen=STEP_HISTORY)
        self.step_grad_norms: deque[float] = deque(maxlen=STEP_HISTORY)
        self._steps_this_epoch = 0
        self._steps_per_epoch: int | None = None
        self._alarmed: set[tuple[str, int]] = set()
        self._lr_expectation: lr_check.LrExpectation | None = None
        self._thresholds: DetectorConfig | None = None
        self._cores = CoreShare()  # torch's CPU threads: the cores left free

    # -- what the trainer tells ----------------------------------------------------------

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.trainer.hparams)

    @property
    def effective_config(self) -> dict[str, Any]:
        """The run's configuration with the trainer's hyperparameters in force now."""
        return {**self.base_config, **jsonable(self.hparams),
                **{k: v for k, v in self.settings.to_dict().items() if k in self.base_config}}

    @property
    def steps_per_epoch(self) -> int:
        return self._known_steps_per_epoch() or max(self._steps_this_epoch, 1)

    def _known_steps_per_epoch(self) -> int | None:
        """What the trainer tells, else what a finished epoch counted; None before either."""
        told = getattr(self.trainer, "steps_per_epoch", None)
        return told if isinstance(told, int) and told > 0 else self._steps_per_epoch

    def _detectors(self) -> DetectorConfig:
        """The thresholds for the hyperparameters in force. Built once an epoch: only the
        supervisor changes them (`apply`, between epochs), so the step check reuses them."""
        t = self.trainer
        cfg = detector_config(t.hparams, getattr(t, "chance_loss", None),
                              getattr(t, "marginal_loss", None),
                              getattr(t, "train_marginal_loss", None),
                              max_loss_increase=self.settings.max_loss_increase)
        steps = self._known_steps_per_epoch()
        if not steps:
            return cfg  # steps of an epoch unknown yet: no step counts as inside the warmup
        return replace(cfg, warmup_steps=cfg.warmup_epochs * steps)

    # -- effects at the edges ------------------------------------------------------------

    def record_event(self, event: Event) -> None:
        """Append an event to events.jsonl and tell the observer."""
        self.run.append_event(event)
        self.events.append(event)
        if self.hooks.on_event:
            self.hooks.on_event(event)

    def resumed(self, pending: Verdict | None, changes: Mapping[str, list[Any]]) -> None:
        """Record that the run continues from a checkpoint (a `resumed` event with the
        `changes` of the resume); `pending` is the divergence it stopped on, which `fit`
        recovers first."""
        self._pending = pending
        reason = pending.reason.value if pending and pending.reason else "interrupted"
        self.record_event(self._event(EventKind.RESUMED, reason, changes=dict(changes)))

    def _event(self, kind: EventKind, reason: str, **fields: Any) -> Event:
        return Event(kind=kind, reason=reason, epoch=fields.pop("epoch", self.epoch),
                     global_epoch=self.global_epoch, **fields)

    def _state(self) -> dict[str, Any]:
        return {"trainer": self.trainer.state_dict(), "supervisor": {
            "version": STATE_VERSION, "epoch": self.epoch, "global_epoch": self.global_epoch,
            "step": self.step, "steps_per_epoch": self._steps_per_epoch or 0,
            "step_losses": list(self.step_losses), "step_grad_norms": list(self.step_grad_norms),
            "hparams": jsonable(self.hparams)}}

    def _save(self, val_loss: float) -> None:
        self.checkpoints.save(self._state(), global_epoch=self.global_epoch,
                              epoch=self.epoch, step=self.step, val_loss=val_loss)
        best = _best(self.checkpoints.listing())
        # The initial weights stay too: a rollback to the very start is always possible.
        self.checkpoints.prune(self.settings.keep_checkpoints,
                               keep={0} | ({best.global_epoch} if best else set()))

    def start(self) -> None:
        """Save the initial state (epoch 0), so a rollback to the very start is possible."""
        self._save(math.inf)

    def restore(self, state: Mapping[str, Any], *, rollback: bool) -> None:
        """Load a checkpoint's state; a rollback keeps the compute counter, a resume takes
        it from the state."""
        if "supervisor" not in state:
            state = _from_version_0(state)
        mine = state["supervisor"]
        if mine.get("version") != STATE_VERSION:
            raise ValueError(f"supervisor state version {mine.get('version')} is not "
                             f"{STATE_VERSION}")
        self.trainer.load_state_dict(state["trainer"])
        self.epoch, self.step = int(mine["epoch"]), int(mine["step"])
        self._steps_per_epoch = int(mine.get("steps_per_epoch") or 0) or None
        self.step_losses = deque((float(v) for v in mine["step_losses"]), STEP_HISTORY)
        self.step_grad_norms = deque((float(v) for v in mine["step_grad_norms"]), STEP_HISTORY)
        if not rollback:
            self.global_epoch = int(mine["global_epoch"])

    def apply(self, wanted: Mapping[str, Any]) -> dict[str, Any]:
        """Give the trainer every value of `wanted` that differs from its own (keys it does
        not have are left out); returns what was applied."""
        current = self.trainer.hparams
        changes = {k: v for k, v in wanted.items() if k in current and _differs(current[k], v)}
        if changes:
            self.trainer.apply_changes(changes)
        return changes

    # -- detection -----------------------------------------------------------------------

    def on_step(self, step: int, loss: float, grad_norm: float | None) -> None:
        """Record a step and check it; raises StepDiverged (recovery on or off) or records
        an alarm (watch) when the detectors judge it diverged."""
        self.step = int(step) + 1
        self._steps_this_epoch += 1
        self.step_losses.append(float(loss))
        if grad_norm is not None:
            self.step_grad_norms.append(float(grad_norm))
        if self.hooks.on_step:
            self.hooks.on_step(step, loss, grad_norm)
        grads = self.step_grad_norms if grad_norm is not None else []
        assert self._thresholds is not None  # set by begin_epoch
        verdict = check_step(self.step_losses, grads, int(step), self._thresholds)
        if not verdict.diverged:
            return
        if not self._acts_on(verdict):
            self._alarm(verdict)
            return
        raise StepDiverged(verdict)

    def _acts_on(self, verdict: Verdict) -> bool:
        """Whether a divergence verdict is acted on (recovered, or the run stopped) rather
        than only recorded as an alarm (watch mode, or a reason in `alarm_only`)."""
        reason = verdict.reason.value if verdict.reason else None
        return self.settings.recovery is not RecoveryMode.WATCH \
            and reason not in self.settings.alarm_only

    def _alarm(self, verdict: Verdict) -> None:
        """An alarm event, nothing changes: in watch mode one per reason and epoch, for a
        reason in `alarm_only` one per run (it would be called again at every epoch)."""
        reason = verdict.reason.value if verdict.reason else "unknown"
        key = (reason, -1 if reason in self.settings.alarm_only else self.epoch)
        if key in self._alarmed:
            return
        self._alarmed.add(key)
        self.record_event(self._event(EventKind.ALARM, reason, step=verdict.step,
                                      message=verdict.message,
                                      evidence=dict(verdict.evidence)))

    # -- recovery ------------------------------------------------------------------------

    def diverged(self, verdict: Verdict) -> RunStatus | None:
        """Act on a divergence; returns a final status, or None to carry on."""
        if not self._acts_on(verdict):
            self._alarm(verdict)
            return None
        assert verdict.reason is not None
        self.record_event(self._event(EventKind.DIVERGED, verdict.reason.value,
                                      step=verdict.step, message=verdict.message,
                                      evidence=dict(verdict.evidence)))
        if self.settings.recovery is RecoveryMode.OFF:
            return RunStatus.DIVERGED
        return self.recover(verdict)

    def recover(self, verdict: Verdict) -> RunStatus | None:
        """Apply the policy to a verdict: roll back and change, or give up."""
        infos = self.checkpoints.listing()
        best = _best(infos)
        # The budget counts recoveries since the run was last resumed by hand.
        resumed = max((i for i, e in enumerate(self.events) if e.kind is EventKind.RESUMED),
                      default=-1)
        past = [e.to_dict() for e in self.events[resumed + 1:]
                if e.kind is EventKind.RECOVERED]
        decision = decide(verdict, self.hparams, past, [i.epoch for i in infos],
                          best.epoch if best else None, self.steps_per_epoch, self.policy,
                          planned_epochs=self.epochs)
        fields = decision.event_fields()
        if decision.give_up:
            self.record_event(self._event(EventKind.GAVE_UP, decision.reason.value, **fields))
            return RunStatus.GAVE_UP
        assert decision.rollback_to is not None  # a decision that does not give up rolls back
        if self.hooks.before_rollback:
            kept = [as_float(r.get("val_loss")) for r in self.history
                    if r["epoch"] <= decision.rollback_to]
            self.hooks.before_rollback(PlannedRollback(
                reason=decision.reason.value, epoch=int(decision.rollback_to),
                best_val_loss=min((v for v in kept if math.isfinite(v)), default=math.inf),
                changes={k: list(v) for k, v in decision.changes.items()}))
        loaded = self.checkpoints.load(int(decision.rollback_to),
                                       map_location=getattr(self.trainer, "device", "cpu"))
        if loaded is None:
            raise RuntimeError(f"no valid checkpoint of epoch {decision.rollback_to} to "
                               f"roll back to in {self.checkpoints}")
        info, state = loaded
        before = self.hparams
        self.restore(state, rollback=True)
        self.checkpoints.discard_after(info.global_epoch)
        self.apply({**before, **{key: new for key, (_, new) in decision.changes.items()}})
        self.run.write_effective(self.effective_config)
        undone = [r for r in self.history if r["epoch"] > info.epoch]
        self.history = [r for r in self.history if r["epoch"] <= info.epoch]
        last_cut = max((e.global_epoch for e in self.events if e.kind is EventKind.RECOVERED
                        and "learning_rate" in (e.changes or {})), default=0)
        self._lr_expectation = lr_check.expect(
            {k: list(v) for k, v in decision.changes.items()}, undone, info.epoch, last_cut)
        self.record_event(self._event(EventKind.RECOVERED, decision.reason.value,
                                      epoch=info.epoch, step=self.step, **fields))
        return None

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> RunResult:
        """Train to the planned epochs; stop early on an unrecovered divergence."""
        status: RunStatus | None = None
        if self.hooks.on_start:
            self.hooks.on_start(self)
        try:
            if self._pending is not None:
                verdict, self._pending = self._pending, None
                status = self.recover(verdict)
            while status is None and self.epoch < self.epochs and not self.compute_spent():
                status = self._one_epoch()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, Interrupted)):
                # What was saved stays: the last epoch's checkpoint and its metrics.
                self.record_event(self._event(EventKind.INTERRUPTED, "interrupted"))
            # A pruned or interrupted run keeps what it queued; after any other
            # BaseException (its trial taken over while it hung) it writes nothing more.
            self._settle(keep=isinstance(exc, (Exception, KeyboardInterrupt, Interrupted)))
            raise
        self._settle(keep=True)  # every queued write on disk before the run ends
        return self.result(status or RunStatus.COMPLETED)

    def compute_spent(self) -> bool:
        """The run has trained its planned epochs and the `extra_epochs` it may add."""
        extra = self.settings.extra_epochs
        return extra is not None and self.global_epoch >= self.epochs + extra

    def _settle(self, keep: bool) -> None:
        """Wait for the background writes (keep), or drop those not started."""
        if keep:
            self.checkpoints.close()
        else:
            self.checkpoints.abandon()

    def _one_epoch(self) -> RunStatus | None:
        start = time.perf_counter()
        self.begin_epoch()
        try:
            train = dict(self.trainer.train_epoch(self.on_step))
        except StepDiverged as exc:
            self.global_epoch += 1  # the partial epoch was compute spent
            return self.diverged(exc.verdict)
        status = self.end_epoch(train, dict(self.trainer.evaluate()), start)
        self._cores.update()  # torch's threads for the next epoch: the cores left free
        return status

    def begin_epoch(self) -> None:
        """Start counting an epoch's steps, with the thresholds of the hyperparameters in
        force."""
        self._steps_this_epoch = 0
        self._thresholds = self._detectors()

    def end_epoch(self, train: Mapping[str, Any], val: Mapping[str, Any],
                  started: float) -> RunStatus | None:
        """Record an epoch (`train` and `val` metrics, begun at `perf_counter` time
        `started`), check it, act on a divergence, save its checkpoint and tell the hooks;
        returns a final status, or None to carry on."""
        t = self.trainer
        self.epoch += 1
        self.global_epoch += 1
        if self._steps_this_epoch:
            self._steps_per_epoch = self._steps_per_epoch or self._steps_this_epoch
        record: dict[str, Any] = {"epoch": self.epoch, "global_epoch": self.global_epoch,
                                  "step": self.step, "steps_per_epoch": self.steps_per_epoch,
                                  **train, **val, "lr": train.get("lr"),
                                  "grad_norm": train.get("grad_norm"),
                                  "time_s": time.perf_counter() - started}
        for name in ("chance_loss", "marginal_loss", "train_marginal_loss"):
            if getattr(t, name, None) is not None:
                record[name] = getattr(t, name)
        line = dict(record)  # before the epoch's checkpoint, off this thread where it can be
        self.checkpoints.in_order(lambda: self.run.append_metrics(line))
        self.history.append(record)
        self._check_lr(record)
        assert self._thresholds is not None  # set by begin_epoch
        verdict = check_epoch(self.history, self._thresholds)
        if verdict.diverged:
            if self._acts_on(verdict):
                return self.diverged(verdict)
            self._alarm(verdict)
        self._save(as_float(val.get("val_loss")))
        if self.hooks.on_epoch:
            self.hooks.on_epoch(record)
        return None

    def _check_lr(self, record: Mapping[str, Any]) -> None:
        """After a cut, the first epoch at the checked position says whether it held."""
        expectation = self._lr_expectation
        if expectation is None or int(record["epoch"]) != expectation.epoch:
            return
        if not lr_check.comparable(expectation, record):
            self._lr_expectation = None  # another point of the schedule: nothing to compare
            return
        self._lr_expectation = None
        lr = record.get("lr")
        applied = None if lr is None else float(lr)
        message = lr_check.judge(expectation, applied)
        if message is not None and applied is not None:  # judged only a rate it was told
            log.warning("%s", message)
            self.record_event(self._event(EventKind.ALARM, "lr_change_not_applied",
                                          message=message,
                                          evidence={"applied": applied,
                                                    "expected": expectation.expected,
                                                    "before": expectation.before,
                                                    "factor": expectation.factor}))

    def result(self, status: RunStatus) -> RunResult:
        vals = [as_float(r.get("val_loss")) for r in self.history]
        finite = [(v, r["epoch"]) for v, r in zip(vals, self.history) if math.isfinite(v)]
        best_val, best_epoch = min(finite) if finite else (math.inf, None)
        return RunResult(status=status, hparams=self.hparams, config=self.effective_config,
                         best_val_loss=best_val, best_epoch=best_epoch,
                         final=self.history[-1] if self.history else {},
                         events=list(self.events), global_epochs=self.global_epoch)
