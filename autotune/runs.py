"""Starting and resuming a supervised run in a run directory (what `train` and `resume` do)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from autotune.divergence import Reason, Verdict
from autotune.supervisor import COMPLETED, Hooks, RunResult, Supervisor
from trainer import checkpoint
from trainer.config import TrainConfig
from trainer.data import ArcData, build_data
from trainer.errors import ConfigError
from trainer.loop import Trainer, pick_device
from trainer.rundir import RunDir
from trainer.schedule import audit


def start_run(config: TrainConfig, run_path: Path, device: str = "auto",
              hooks: Hooks | None = None, data: ArcData | None = None) -> RunResult:
    """Train `config` from scratch in `run_path`, recovering per `config.recovery`."""
    data = data if data is not None else build_data(config)  # bad data: nothing written yet
    run = RunDir.create(run_path, config)
    trainer = Trainer(config, data, pick_device(device))
    supervisor = Supervisor(trainer, run, hooks)
    supervisor.start()
    return finish(supervisor, supervisor.fit())


def _pending(events: list[dict[str, Any]]) -> Verdict | None:
    """The divergence a run stopped on (recovery off, or budget spent), if it did."""
    if not events or events[-1].get("kind") not in ("diverged", "gave_up"):
        return None
    last = next(e for e in reversed(events) if e.get("kind") == "diverged")
    return Verdict(True, Reason(last["reason"]), last.get("message", ""),
                   last.get("evidence", {}), step=last.get("step"), epoch=last.get("epoch"))


def resume_run(run_path: Path, epochs: int | None = None, device: str = "auto",
               hooks: Hooks | None = None) -> RunResult:
    """Continue a run: a diverged one is rolled back and changed first (and recovers from
    then on, even if it ran with recovery off), an interrupted one continues from its latest
    valid checkpoint, a finished one is extended by `epochs`."""
    run = RunDir.open(run_path)
    config = planned = run.effective_config()
    if epochs is not None:
        config = config.replace(epochs=epochs)
    loaded = checkpoint.load_latest(run.checkpoints)
    if loaded is None:
        raise ConfigError(f"run directory {str(run.path)!r} has no valid checkpoint to "
                          f"resume from.")
    info, state = loaded
    events = run.events()
    pending = _pending(events)
    changes: dict[str, list[Any]] = {}
    if epochs is not None:
        changes["epochs"] = [planned.epochs, epochs]
    if pending is not None and not config.recovery:
        # Resuming a run that stopped at a divergence is asking for recovery: recover until
        # it is stable (within the budget), not just once.
        config = config.replace(recovery=True)
        changes["recovery"] = [False, True]
    if pending is None and info.epoch >= config.epochs:
        raise ConfigError(f"run {str(run.path)!r} already finished its {config.epochs} epochs;"
                          f" give --epochs N with N > {info.epoch} to extend it.")
    data = build_data(config)
    trainer = Trainer(config, data, pick_device(device))
    trainer.load_state_dict(state, keep_config=True)
    run.truncate_metrics(info.global_epoch)
    run.write_effective(config)
    supervisor = Supervisor(trainer, run, hooks)
    supervisor.pending = pending
    supervisor.record_event({"kind": "resumed",
                             "reason": pending.reason.value if pending else "interrupted",
                             "epoch": trainer.epoch, "global_epoch": trainer.global_epoch,
                             "rolled_back_to": None, "changes": changes})
    return finish(supervisor, supervisor.fit())


def finish(supervisor: Supervisor, result: RunResult) -> RunResult:
    """Write the summary; a completed run is also scored on the held-out test pairs."""
    trainer = supervisor.trainer
    summary: dict[str, Any] = {
        "status": result.status, "stable": result.stable,
        "best_val_loss": result.best_val_loss, "best_epoch": result.best_epoch,
        "final": result.final, "divergences": result.divergences,
        "recoveries": result.recoveries, "global_epochs": result.global_epochs,
        "effective_config": result.config.to_dict(),
    }
    if result.status == COMPLETED:
        summary["test"] = trainer.evaluate("test")
        summary["schedule_audit"] = schedule_audit(trainer, result.events)
    supervisor.run.write_summary(summary)
    return result


def schedule_audit(trainer: Trainer, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Check the applied learning rate against lr_at since the configuration last changed."""
    since = max((int(e.get("step") or 0) for e in events if e.get("kind") == "recovered"),
                default=0)
    trace = [(s, lr) for s, lr in trainer.lr_trace if s >= since]
    result = audit([s for s, _ in trace], [lr for _, lr in trace], trainer.config,
                   trainer.steps_per_epoch)
    return {"ok": result.ok, "checked_steps": result.checked, "message": result.message,
            "since_step": since}


def best_of(result: RunResult) -> float:
    """The objective of a run: its best validation loss, inf when it never had one."""
    return result.best_val_loss if math.isfinite(result.best_val_loss) else math.inf
