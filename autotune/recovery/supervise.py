"""Start or continue a supervised run in a run directory: `autotune.supervise`.

`supervise` is the public entry point for any `Trainable`; `continue_run` resumes a run
directory with a freshly built trainer (what `autotune resume` does for ARC runs, through
`autotune.recovery.runs`), and `finish` writes its summary.json, with what a trainer's
optional members add for a run that ended stable (`held_out`: the ARC trainer's held-out
test scores and its schedule audit; see `autotune.recovery.trainable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.detect import Reason, Verdict
from autotune.errors import ConfigError, quote_path
from autotune.events import Event, EventKind
from autotune.jsonio import as_float, jsonable
from autotune.recovery import checkpoint_files
from autotune.recovery.faults import with_faults
from autotune.recovery.ladders import RecoveryConfig
from autotune.recovery.lock import run_lock
from autotune.recovery.rundir import RunDir
from autotune.recovery.settings import RecoveryMode, SupervisorConfig
from autotune.recovery.supervisor import Hooks, RunResult, Supervisor
from autotune.recovery.trainable import Trainable

__all__ = ["check_resumable", "continue_run", "finish", "held_out", "pending_verdict", "start",
           "supervise"]


def supervise(trainer: Trainable, run_dir: str | Path, epochs: int, *,
              recovery: str | RecoveryMode = "on", max_recoveries: int = 4,
              max_loss_increase: float = 0.3, keep_checkpoints: int = 3,
              policy: RecoveryConfig | None = None, hooks: Hooks | None = None,
              extra_epochs: int | None = None,
              alarm_only: Sequence[str] = ()) -> RunResult:
    """Train `trainer` for `epochs` epochs in `run_dir`, detecting and recovering.

    A new `run_dir` gets config.yaml (the trainer's `hparams` and these settings),
    metrics.jsonl, events.jsonl, effective_config.yaml, summary.json and checkpoints. On a
    `run_dir` that already holds a run, the run continues from its latest valid checkpoint
    with a freshly built `trainer` (its hyperparameters are set to the effective ones
    first); a run that stopped at a divergence is recovered first.

    Args:
        trainer: any `autotune.Trainable`.
        run_dir: the run directory.
        epochs: planned epochs (an existing run is extended to this many).
        recovery: `on` (recover), `off` (stop at the first divergence) or `watch` (alarms
            only, the run goes on).
        max_recoveries: recoveries allowed before the run gives up.
        max_loss_increase: validation loss above its best + this is a divergence.
        keep_checkpoints: the latest checkpoints kept (besides the best and the initial).
        policy: the recovery policy's knobs (ladders, factors); default from max_recoveries.
        hooks: optional observers.
        extra_epochs: epochs the run may train beyond `epochs` to replay what rollbacks
            undid (then it ends with its best model); None: as many as it takes.
        alarm_only: reasons (`overfitting`, `loss_increase`, ...) that only raise an
            alarm, once a run, whatever `recovery` says; a search sets `overfitting`.

    With `AUTOTUNE_INJECT` set, the trainer meets its faults (`autotune.recovery.faults`).
    """
    trainer = with_faults(trainer)
    settings = SupervisorConfig(recovery=RecoveryMode.parse(recovery),
                                max_recoveries=max_recoveries,
                                max_loss_increase=max_loss_increase,
                                keep_checkpoints=keep_checkpoints,
                                extra_epochs=extra_epochs, alarm_only=alarm_only)
    path = Path(run_dir)
    if RunDir(path).exists():
        run = RunDir.open(path)
        check_resumable(run)
        with run_lock(path, "autotune.supervise"):
            return continue_run(trainer, run, epochs, settings, policy, hooks)
    config = {**jsonable(dict(trainer.hparams)), "epochs": int(epochs)}
    return start(trainer, path, epochs, config, settings, policy, hooks)


def start(trainer: Trainable, path: Path, epochs: int, config: Mapping[str, Any],
          settings: SupervisorConfig, policy: RecoveryConfig | None = None,
          hooks: Hooks | None = None, *, holder: str = "autotune.supervise",
          score: bool = True) -> RunResult:
    """Train a fresh `trainer` for `epochs` in a new run directory `path`, whose
    config.yaml holds `config` and the supervisor's settings; summary.json at the end.
    The run directory's lock is held throughout (`holder` says who, for a second process's
    message); `score=False` skips the trainer's held-out scores (`held_out`)."""
    config = {**config, **settings.to_dict()}
    path = Path(path)
    RunDir(path).check_new()  # before the lock writes anything
    with run_lock(path, holder):
        run = RunDir.create(path, config)
        supervisor = Supervisor(trainer, run, epochs=epochs, settings=settings,
                                policy=policy, hooks=hooks, config=config)
        supervisor.start()
        return finish(supervisor, supervisor.fit(), score=score)


def pending_verdict(events: list[Event]) -> Verdict | None:
    """The divergence a run stopped on (recovery off, or budget spent), if it did."""
    stops = (EventKind.DIVERGED, EventKind.GAVE_UP)
    last_kinds = [e for e in events if e.kind not in (EventKind.ALARM,)]
    if not last_kinds or last_kinds[-1].kind not in stops:
        return None
    last = next(e for e in reversed(events) if e.kind is EventKind.DIVERGED)
    return Verdict(True, Reason(last.reason), last.message,
                   {k: as_float(v) for k, v in last.evidence.items()}, step=last.step,
                   epoch=last.epoch)


def continue_run(trainer: Trainable, run: RunDir, epochs: int | None,
                 settings: SupervisorConfig, policy: RecoveryConfig | None = None,
                 hooks: Hooks | None = None,
                 score: bool = True) -> RunResult:
    """Continue the run in `run` with a freshly built `trainer`: from its latest valid
    checkpoint, after recovering the divergence it stopped on (if it did)."""
    effective = run.effective_config()
    planned = int(effective.get("epochs", 0) or 0)
    epochs = planned if epochs is None else int(epochs)
    loaded = checkpoint_files.load_latest(run.checkpoints,
                                          map_location=getattr(trainer, "device", "cpu"))
    if loaded is None:
        raise _no_checkpoint(run)
    info, state = loaded
    events = run.events()
    pending = pending_verdict(events)
    changes: dict[str, list[Any]] = {}
    if epochs != planned:
        changes["epochs"] = [planned, epochs]
    if pending is not None and settings.recovery is not RecoveryMode.ON:
        # Resuming a run that stopped at a divergence is asking for recovery: recover until
        # it is stable (within the budget), not just once.
        changes["recovery"] = [settings.recovery.value, RecoveryMode.ON.value]
        settings = settings.replace(recovery=RecoveryMode.ON)
    # A run killed after its last epoch, before its summary was written, is finished (the
    # summary and, for an ARC run, the held-out scores); one with a summary is done.
    if pending is None and info.epoch >= epochs and run.summary() is not None:
        raise ConfigError(f"run {quote_path(run.path)} already finished its {epochs} epochs; "
                          f"give --epochs N with N > {info.epoch} to extend it.")
    config = {**effective, "epochs": epochs,
              **{k: v for k, v in settings.to_dict().items() if k in effective}}
    run.truncate_metrics(info.global_epoch)
    supervisor = Supervisor(trainer, run, epochs=epochs, settings=settings, policy=policy,
                            hooks=hooks, config=config)
    supervisor.restore(state, rollback=False)
    supervisor.apply({k: v for k, v in effective.items() if k in trainer.hparams})
    run.write_effective(supervisor.effective_config)
    supervisor.resumed(pending, changes)
    result = supervisor.fit()
    return finish(supervisor, result, score=score)


def held_out(trainer: Trainable, result: RunResult, score: bool = True) -> dict[str, Any]:
    """What a stable run's trainer adds to its summary through its optional members:
    `held_out_scores()` under `test` (also kept on `result.scores`), and
    `schedule_audit(since_step)` under `schedule_audit`, checked since the configuration
    last changed (the scores only with `score`: a search scores only its winner, afterwards).
    A run that did not end stable, or a trainer without them, adds nothing."""
    if not result.stable:
        return {}
    extra: dict[str, Any] = {}
    scores = getattr(trainer, "held_out_scores", None)
    if score and callable(scores):
        result.scores = dict(scores())
        extra["test"] = result.scores
    audit = getattr(trainer, "schedule_audit", None)
    if callable(audit):
        since = max((int(e.step or 0) for e in result.events if e.kind is EventKind.RECOVERED),
                    default=0)
        extra["schedule_audit"] = dict(audit(since))
    return extra


def _no_checkpoint(run: RunDir) -> ConfigError:
    return ConfigError(f"run directory {quote_path(run.path)} has no valid checkpoint to "
                       f"resume from.")


def check_resumable(run: RunDir) -> None:
    """ConfigError when `run` has no checkpoint at all (checked before its lock is taken,
    so that nothing is written; a damaged one is found when it is loaded)."""
    if not checkpoint_files.listing(run.checkpoints):
        raise _no_checkpoint(run)


def finish(supervisor: Supervisor, result: RunResult,
           extra: Mapping[str, Any] | None = None, score: bool = True) -> RunResult:
    """Write summary.json, with `extra` or else what the trainer's optional members add
    (`held_out`, the held-out scores only with `score`)."""
    if extra is None:
        extra = held_out(supervisor.trainer, result, score)
    summary: dict[str, Any] = {
        "status": result.status.value, "stable": result.stable,
        "best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
        "final": result.final, "divergences": result.divergences,
        "recoveries": result.recoveries, "global_epochs": result.global_epochs,
        "effective_config": result.config, **(extra or {}),
    }
    supervisor.run.write_summary(summary)
    return result
