"""What a supervised run hands out: how it ended (`RunResult`), a rollback it is about
to make (`PlannedRollback`), and the exception that stops a diverged step
(`StepDiverged`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autotune.detect import Verdict
from autotune.events import Event, EventCounts, RunStatus

__all__ = ["PlannedRollback", "RunResult", "StepDiverged"]


class StepDiverged(Exception):
    """Raised from `on_step` to stop a step the detectors judged diverged."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message or str(verdict.reason))
        self.verdict = verdict


@dataclass(frozen=True)
class PlannedRollback:
    """A recovery the policy decided on, before it is carried out."""

    reason: str
    """The divergence's reason."""
    epoch: int
    """The logical epoch it rolls back to."""
    best_val_loss: float
    """The best validation loss of the surviving history up to that epoch (inf: none)."""
    changes: dict[str, list[Any]]
    """What it would change: {key: [old, new]}."""


@dataclass
class RunResult(EventCounts):
    """How a supervised run ended and what survived."""

    status: RunStatus
    hparams: dict[str, Any]
    """The trainer's effective hyperparameters at the end."""
    config: dict[str, Any]
    """The whole effective configuration (what effective_config.yaml holds)."""
    best_val_loss: float
    best_epoch: int | None
    final: dict[str, Any]
    """The last epoch's metrics record."""
    events: list[Event] = field(default_factory=list)
    global_epochs: int = 0
    scores: dict[str, Any] = field(default_factory=dict)
    """Held-out scores a trainer-specific runner adds (an ARC run: `test_pass2`, ...)."""

    @property
    def stable(self) -> bool:
        return self.status is RunStatus.COMPLETED

    @property
    def objective(self) -> float:
        """The best validation loss, inf when the run never had a finite one."""
        return self.best_val_loss if math.isfinite(self.best_val_loss) else math.inf
