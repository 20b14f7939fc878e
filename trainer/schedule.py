"""The learning rate as a pure function of the step: warmup multiplier times decay.

Nothing here holds state, so nothing needs saving on a checkpoint and nothing can be
overwritten by a warmup or compounded by a chained scheduler: `apply_lr` is the one place
that writes the optimizer's learning rate, and it writes `lr_at(step, ...)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainer.config import TrainConfig


def lr_at_epoch(epoch: float, config: TrainConfig) -> float:
    """The learning rate at a (fractional) epoch of training, per `config`."""
    peak = config.learning_rate
    floor = peak * config.min_lr_ratio
    warmup = config.warmup_epochs
    # Warmup: linear from 0 to the peak over `warmup` epochs.
    if warmup > 0 and epoch < warmup:
        return peak * epoch / warmup
    # Decay: from the peak at the end of warmup to the floor at the planned last epoch.
    if config.schedule == "constant":
        return peak
    span = max(config.epochs - warmup, 1e-12)
    progress = min(max((epoch - warmup) / span, 0.0), 1.0)
    if config.schedule == "linear":
        return floor + (peak - floor) * (1.0 - progress)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """The learning rate applied at optimizer step `step` (0-based).

    Step k is applied after k+1 batches, so the first step of a warmup is not 0 and the
    last planned step lands on the floor of the decay.
    """
    return lr_at_epoch((step + 1) / steps_per_epoch, config)


def apply_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The only code that writes the optimizer's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class AuditResult:
    """The schedule audit: does a recorded learning-rate trace follow `lr_at`?"""

    ok: bool
    checked: int
    first_bad_step: int | None = None
    applied: float | None = None
    expected: float | None = None

    @property
    def message(self) -> str:
        if self.ok:
            return f"the applied learning rate matched lr_at at all {self.checked} steps"
        return (f"at step {self.first_bad_step} the applied learning rate was "
                f"{self.applied:.6g} but lr_at gives {self.expected:.6g}")


def audit(steps: Sequence[int], applied: Sequence[float], config: TrainConfig,
          steps_per_epoch: int, rel_tol: float = 1e-6) -> AuditResult:
    """Compare a recorded (step, applied lr) trace with the schedule of `config`."""
    for step, lr in zip(steps, applied, strict=True):
        expected = lr_at(step, config, steps_per_epoch)
        if not math.isclose(lr, expected, rel_tol=rel_tol, abs_tol=1e-12):
            return AuditResult(False, len(steps), step, lr, expected)
    return AuditResult(True, len(steps))
