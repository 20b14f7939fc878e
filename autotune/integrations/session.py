"""One supervised run inside a framework's own loop: what both callbacks share.

The framework trains; its callback calls `Session` at three points, and the session
drives `autotune.recovery.supervisor.Supervisor` with them, so the detectors, the policy,
the run directory and the learning-rate check are the ones every autotune run uses:

- `before_update(loss)`, after backward and before the optimizer step: the step
  detectors (`Supervisor.on_step`). A diverged step is not applied (its gradients are
  dropped, so the optimizer leaves every parameter and its own state alone).
- `after_update()`, after the optimizer and the scheduler stepped: a step that diverged
  is acted on (`Supervisor.diverged`): rolled back in place, stopped, or only alarmed.
- `validated(val_loss)`, after each validation: one epoch record of the logical timeline
  (`Supervisor.end_epoch`): the epoch detectors, the rollback or the stop, the in-memory
  checkpoint, and the Optuna report and pruning through the search's own `TrialRecorder`.

Counters: the session's logical epoch (a validation on the surviving timeline) and step
go back with a rollback, with the model, the optimizer and the scheduler (whose position
is the schedule's). The framework's own counters (`trainer.current_epoch`,
`state.global_step`, `max_epochs`, `max_steps`) keep counting compute, as `global_epoch`
does: a rollback replays epochs inside the framework's budget, it does not extend it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

import optuna

from autotune.detect import Verdict
from autotune.events import RunStatus
from autotune.integrations.parts import TrainingParts
from autotune.integrations.trial import TrialLink, unstable_reason
from autotune.jsonio import jsonable
from autotune.recovery.checkpoints import MemoryCheckpoints
from autotune.recovery.lock import RunLock
from autotune.recovery.rundir import RunDir
from autotune.recovery.settings import RecoveryMode, SupervisorConfig
from autotune.recovery.supervise import finish
from autotune.recovery.supervisor import Hooks, RunResult, StepDiverged, Supervisor
from autotune.recovery.trainable import Trainable

__all__ = ["Session", "check_single_process"]

T = TypeVar("T")


def callback_settings(recovery: str, max_recoveries: int) -> tuple[RecoveryMode, int]:
    """A callback's recovery arguments, validated when the callback is made, so a typo
    fails where it was written rather than at the start of training."""
    return (RecoveryMode.parse(recovery),
            SupervisorConfig(max_recoveries=max_recoveries).max_recoveries)


def check_single_process(world_size: int, framework: str) -> None:
    """Multi-process training is out of scope: one process cannot roll the others back."""
    if world_size > 1:
        raise ValueError(f"RecoveryCallback supports one process, but this {framework} run "
                         f"has world_size {world_size} (a multi-GPU or multi-node strategy); "
                         f"run it on one device, or without the callback.")


class Session:
    """The supervisor of one `fit`/`train` call, driven by a framework's hooks."""

    def __init__(self, run_dir: str | Path, parts: TrainingParts, *, recovery: RecoveryMode,
                 max_recoveries: int, planned_epochs: int | None,
                 trial: optuna.Trial | None = None) -> None:
        settings = SupervisorConfig(recovery=recovery, max_recoveries=max_recoveries)
        epochs = int(planned_epochs or 0)
        config = {**jsonable(parts.hparams), **settings.to_dict(), "epochs": epochs}
        RunDir(Path(run_dir)).check_new()  # before the lock writes anything
        # One writer a run directory (`autotune.recovery.lock`), held until `finish`.
        self._lock = RunLock(Path(run_dir), "a framework's RecoveryCallback").acquire()
        try:
            run = RunDir.create(Path(run_dir), config)
        except BaseException:
            self._lock.release()
            raise
        self.parts = parts
        self.link = TrialLink(trial, run.path) if trial is not None else None
        # The framework's loop is not a Trainable's: it calls the supervisor's epoch and
        # step pieces itself and never its `fit`, so train_epoch and evaluate go unused.
        self.supervisor = Supervisor(cast(Trainable, parts), run, epochs=epochs,
                                     settings=settings, config=config,
                                     hooks=self.link.hooks() if self.link else Hooks(),
                                     checkpoints=MemoryCheckpoints())
        self.status: RunStatus | None = None
        self.result: RunResult | None = None
        self._pending: Verdict | None = None
        self._losses: list[float] = []
        self._last_lr: float | None = None
        self._last_grad: float | None = None
        self._started = time.perf_counter()
        self.supervisor.start()
        if self.supervisor.hooks.on_start:
            self.supervisor.hooks.on_start(self.supervisor)
        self.supervisor.begin_epoch()

    @property
    def run(self) -> RunDir:
        return self.supervisor.run

    @property
    def stopped(self) -> bool:
        """The run ended at a divergence (recovery off, or the budget spent), or finished."""
        return self.status is not None or self.result is not None

    def _settle(self, act: Callable[[], T]) -> T:
        """Run a supervisor step; with a trial, a pruned or stopped run is recorded on it
        and ends in `optuna.TrialPruned` (what Optuna's pruning callbacks raise)."""
        try:
            out = act()
        except optuna.TrialPruned as exc:
            self.finish(pruned_reason=str(exc))
            raise
        if self.link is not None and self.status is not None:
            result = self.finish()
            raise optuna.TrialPruned(unstable_reason(result))
        return out

    def _new_epoch(self) -> None:
        self.supervisor.begin_epoch()
        self._losses, self._last_lr, self._last_grad = [], None, None
        self._started = time.perf_counter()

    # -- the framework's points ----------------------------------------------------------

    def before_update(self, loss: float, grad_norm: float | None) -> bool:
        """Check the step about to be applied; False: drop its update."""
        if self.stopped:
            return False
        lr = self.parts.lr
        if self.parts.chance_loss is None and math.isfinite(loss):
            # The run's first step: its loss is that of the initial weights. Nothing of the
            # epoch is counted yet, so the thresholds are simply built again with it.
            self.parts.chance_loss = float(loss)
            self.supervisor.begin_epoch()
        try:
            self.supervisor.on_step(self.supervisor.step, loss, grad_norm)
        except StepDiverged as exc:
            self._pending = exc.verdict
            return False
        self._losses.append(float(loss))
        self._last_lr, self._last_grad = lr, grad_norm
        return True

    def after_update(self) -> RunStatus | None:
        """Act on the divergence of the step just skipped; a final status stops the run."""
        if self._pending is None:
            return None
        verdict, self._pending = self._pending, None

        def act() -> RunStatus | None:
            self.status = self.supervisor.diverged(verdict)
            if self.status is None and self.supervisor.settings.recovery is RecoveryMode.ON:
                self._new_epoch()  # rolled back: a new logical epoch from the checkpoint
            return self.status

        return self._settle(act)

    def validated(self, val_loss: float) -> RunStatus | None:
        """Record the epoch that this validation ends; a final status stops the run."""
        if self.stopped:
            return self.status
        if not self._losses:
            # No update since the last epoch (an evaluation before training, as the HF
            # Trainer's eval_on_start makes, or right after a rollback): nothing to judge.
            return None
        # The mean of the applied steps (a non-finite one, applied under watch, shows).
        train = {"train_loss": sum(self._losses) / len(self._losses), "lr": self._last_lr,
                 "grad_norm": self._last_grad}

        def act() -> RunStatus | None:
            self.status = self.supervisor.end_epoch(train, {"val_loss": float(val_loss)},
                                                    self._started)
            self._new_epoch()
            return self.status

        return self._settle(act)

    def finish(self, pruned_reason: str | None = None) -> RunResult:
        """Write summary.json and record the outcome on the trial, if any (once)."""
        if self.result is None:
            self.result = finish(self.supervisor, self.supervisor.result(
                self.status or RunStatus.COMPLETED))
            if self.link is not None:
                self.link.record(self.result, pruned_reason)
            self._lock.release()
        return self.result
