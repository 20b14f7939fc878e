"""`AUTOTUNE_INJECT` for any trainer: the faults met at `on_step`.

Our ARC trainer applies the faults inside its step (`trainer.inject`). A trainer that does
not (no `injects_faults` member) is wrapped: its `on_step` calls pass through
`FaultyTrainable`, which at a fault's step shows the supervisor a NaN loss (`nan_loss`), a
loss 100 times larger (`spike`), an infinite gradient norm (`inf_grad`), ends the
process at once with `os._exit(137)` after `trainer.inject.BEFORE_KILL`'s flushes
(`kill`), as a dead machine would, or parks it until
a test lets it go (`hold`). The supervisor then
stops that step unapplied, as it would for the trainer's own NaN. Steps count the steps of
compute of this process (they never go back after a rollback, so a fault fires once); a
run continued in a new process counts from 0 again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.recovery.trainable import OnStep, Trainable
from trainer.inject import HOLD_ENV, SPIKE_FACTOR, Injector, hold, kill

__all__ = ["FaultyTrainable", "with_faults"]


class FaultyTrainable:
    """A Trainable whose `on_step` calls meet the injector's faults; everything else is the
    wrapped trainer's (its optional members included)."""

    def __init__(self, trainer: Trainable, injector: Injector) -> None:
        self.trainer = trainer
        self.injector = injector
        self.compute_step = 0

    @property
    def hparams(self) -> Mapping[str, Any]:
        return self.trainer.hparams

    def train_epoch(self, on_step: OnStep) -> Mapping[str, Any]:
        def faulty(step: int, loss: float, grad_norm: float | None) -> None:
            at, fires = self.compute_step, self.injector.fires
            self.compute_step += 1
            if fires(at, "kill"):
                kill()  # `BEFORE_KILL`'s flushes, then as if the machine died
            if fires(at, "hold"):  # tests: parked here until the test lets it go
                hold(Path(os.environ[HOLD_ENV]), at)
            if fires(at, "nan_loss"):
                loss = math.nan
            elif fires(at, "spike"):
                loss = loss * SPIKE_FACTOR
            if fires(at, "inf_grad"):
                grad_norm = math.inf
            on_step(step, loss, grad_norm)

        return self.trainer.train_epoch(faulty)

    def evaluate(self) -> Mapping[str, Any]:
        return self.trainer.evaluate()

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.trainer.load_state_dict(state)

    def apply_changes(self, changes: Mapping[str, Any]) -> None:
        self.trainer.apply_changes(changes)

    def __getattr__(self, name: str) -> Any:
        # Optional members (steps_per_epoch, device, held_out_scores, ...) are the trainer's.
        return getattr(self.trainer, name)


def with_faults(trainer: Trainable, stream: int = 0) -> Trainable:
    """`trainer`, wrapped to meet `AUTOTUNE_INJECT`'s faults when the variable is set and
    the trainer does not apply them itself; otherwise `trainer` as it is."""
    if getattr(trainer, "injects_faults", False):
        return trainer
    injector = Injector.from_env(0, stream=stream)
    return FaultyTrainable(trainer, injector) if injector else trainer
