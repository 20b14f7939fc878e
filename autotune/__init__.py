"""autotune: keeps model training from diverging, automatically.

The public API, for your own trainer:

    import autotune
    result = autotune.supervise(trainer, "runs/mine", epochs=20, recovery="on")
    result.status, result.hparams, result.best_val_loss, result.recoveries, result.events

`trainer` is any object that follows `autotune.Trainable`. To search one,
`autotune.create_study(...)` and `study.optimize(autotune.objective(build, epochs=...,
run_root=...), n_trials=...)` (`autotune.search.api`). The detectors
(`check_step`, `check_epoch`) and the recovery policy (`decide`) are pure functions you can
call on their own; `autotune.diagnose.diagnose_target(path)` explains a run directory or a
training log. See docs/CONTRACT.md ("Python API").
"""

from autotune.detect import (
    DetectorConfig,
    Reason,
    Verdict,
    check_epoch,
    check_nonfinite,
    check_step,
    detector_config,
)
from autotune.events import Event, EventKind, RunStatus
from autotune.recovery.ladders import Action, RecoveryConfig
from autotune.recovery.policy import Decision, decide
from autotune.recovery.settings import RecoveryMode
from autotune.recovery.supervise import supervise
from autotune.recovery.supervisor import Hooks, RunResult
from autotune.recovery.trainable import HPARAM_KEYS, Trainable

__all__ = [
    "HPARAM_KEYS",
    "Action",
    "Decision",
    "DetectorConfig",
    "Event",
    "EventKind",
    "Hooks",
    "Reason",
    "RecoveryConfig",
    "RecoveryMode",
    "RunResult",
    "RunStatus",
    "Trainable",
    "Verdict",
    "check_epoch",
    "check_nonfinite",
    "check_step",
    "decide",
    "detector_config",
    "create_study",
    "diagnose",
    "objective",
    "supervise",
]


def __getattr__(name: str) -> object:
    # PEP 562: `autotune.diagnose` (the log readers and findings) loads pandas, so it is
    # imported when first used, not with the package.
    import importlib

    if name == "diagnose":
        return importlib.import_module("autotune.diagnose")
    if name in ("objective", "create_study"):  # the search loads Optuna and the trainer
        return getattr(importlib.import_module("autotune.search.api"), name)
    raise AttributeError(f"module 'autotune' has no attribute {name!r}")
