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

import os as _os

# OpenMP threads that wait for work sleep instead of spinning. Spinning threads are what
# made a search on 2 cores 7.5 times slower with one busy process beside it: every
# parallel region waited for a thread the busy process held (BENCHMARKS.md, "Threads").
# It only takes effect when set before torch is imported (the CLI imports autotune first);
# a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from autotune.detect import (  # noqa: E402
    DetectorConfig,
    Reason,
    Verdict,
    check_epoch,
    check_nonfinite,
    check_step,
    detector_config,
)
from autotune.events import Event, EventKind, RunStatus  # noqa: E402
from autotune.recovery.ladders import Action, RecoveryConfig  # noqa: E402
from autotune.recovery.policy import Decision, decide  # noqa: E402
from autotune.recovery.settings import RecoveryMode  # noqa: E402
from autotune.recovery.supervise import supervise  # noqa: E402
from autotune.recovery.supervisor import Hooks, RunResult  # noqa: E402
from autotune.recovery.trainable import HPARAM_KEYS, Trainable  # noqa: E402

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
