"""A framework's training state as the supervisor sees a trainer: `TrainingParts`.

The model, the optimizer, the learning-rate scheduler and the gradient clipping of a
Lightning or Hugging Face run, with the members of `autotune.Trainable` the supervisor
uses between steps: `hparams`, `state_dict`, `load_state_dict` and `apply_changes`. The
framework runs the loop; nothing here trains.

A change to the learning rate must survive the framework's own scheduler. The schedulers
of `torch.optim.lr_scheduler` that Lightning users write and that the HF Trainer builds
(`LambdaLR` for linear, cosine and constant-with-warmup) compute the rate from
`scheduler.base_lrs` (the param groups' `initial_lr`); a cut written into
`param_group["lr"]` alone is undone at their next step. So the cut scales the base rates,
the groups' `initial_lr` (and OneCycleLR's `max_lr`/`min_lr`) and the current rate
together: every scheduler then applies the cut rate from the next step on, whether it
computes the rate from its base (`LambdaLR`, `CosineAnnealingLR`) or multiplies the current
one (`ExponentialLR`, `StepLR`, `ReduceLROnPlateau`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["TrainingParts", "grad_norm"]

# The param-group keys that hold a rate a scheduler computes from (scaled with the cut).
_RATE_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def grad_norm(model: nn.Module) -> float | None:
    """The 2-norm of all the model's gradients (None: no gradient yet)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.nn.utils.get_total_norm(grads, 2.0))


def _schedulers(scheduler: Any) -> Iterator[Any]:
    """The scheduler and those it wraps (SequentialLR, ChainedScheduler, accelerate's)."""
    if scheduler is None:
        return
    inner = getattr(scheduler, "scheduler", None)  # accelerate's AcceleratedScheduler
    if inner is not None and hasattr(inner, "state_dict"):
        yield from _schedulers(inner)
        return
    yield scheduler
    for child in getattr(scheduler, "_schedulers", None) or ():
        yield from _schedulers(child)


@dataclass
class TrainingParts:
    """The model, optimizer, scheduler and clipping of a framework's run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    """A `torch.optim.lr_scheduler` scheduler (or a wrapper of one), or None."""
    get_clip: Callable[[], float | None]
    """The framework's clipping threshold (None or 0: off)."""
    set_clip: Callable[[float], None]
    steps_per_epoch: int | None = None
    """Optimizer steps between two validations, when the framework says."""
    chance_loss: float | None = None
    """The loss of the initial weights, a model that knows nothing (the detectors'
    `reference_loss`: a validation loss above it by more than `max_loss_increase` is
    instability even before there is a best epoch to compare with). The session sets it
    from the run's first step."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def lr(self) -> float:
        """The rate the optimizer applies at its next step (the first group's)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def hparams(self) -> dict[str, Any]:
        """`learning_rate` (the scheduler's base rate, else the current rate), `grad_clip`
        and, when the optimizer has it, `weight_decay` (the largest of its groups')."""
        groups = self.optimizer.param_groups
        base = next((list(s.base_lrs) for s in _schedulers(self.scheduler)
                     if getattr(s, "base_lrs", None)), None)
        out: dict[str, Any] = {
            "learning_rate": float(base[0]) if base else float(groups[0]["lr"]),
            "grad_clip": float(self.get_clip() or 0.0),
        }
        if all("weight_decay" in g for g in groups):
            out["weight_decay"] = max(float(g["weight_decay"]) for g in groups)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The model's, the optimizer's and the scheduler's states (live tensors: the
        checkpoint store copies them)."""
        state: dict[str, Any] = {"model": self.model.state_dict(),
                                 "optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])

    def apply_changes(self, changes: Mapping[str, Any]) -> None:
        """Set `learning_rate`, `grad_clip` and `weight_decay` from the next step on."""
        if "learning_rate" in changes:
            self._scale_rates(float(changes["learning_rate"]) / self.hparams["learning_rate"])
        if "grad_clip" in changes:
            self.set_clip(float(changes["grad_clip"]))
        if "weight_decay" in changes:
            self._set_weight_decay(float(changes["weight_decay"]))

    def _scale_rates(self, factor: float) -> None:
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"a learning-rate change must scale by a positive factor but "
                             f"got {factor}.")
        for group in self.optimizer.param_groups:
            for key in _RATE_KEYS:
                if isinstance(group.get(key), (int, float)):
                    group[key] = group[key] * factor
        for scheduler in _schedulers(self.scheduler):
            if getattr(scheduler, "base_lrs", None):
                scheduler.base_lrs = [b * factor for b in scheduler.base_lrs]
            if getattr(scheduler, "_last_lr", None):
                scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _set_weight_decay(self, value: float) -> None:
        """The groups that decay get `value`; those kept at 0 (biases, norms, as the HF
        Trainer groups them) stay there, unless no group decays yet."""
        groups = self.optimizer.param_groups
        current = max(float(g.get("weight_decay", 0.0)) for g in groups)
        for group in groups:
            if current <= 0.0 or float(group.get("weight_decay", 0.0)) > 0.0:
                group["weight_decay"] = value
