"""The recovery policy's data: actions, the ladders they climb, and the policy's knobs.

Each Reason has a ladder of rungs; a rung is the set of actions taken together. Reasons
that share a ladder (by default the four instability reasons) escalate together: the n-th
recovery for them starts at the rung after the last one used. A rung whose actions would
all change nothing (smoothing already off, augmentation already on) is passed over, and a
no-op action inside a rung is dropped. Past the top, the last rung repeats (it lowers the
learning rate again) until the budget is spent. `autotune.recovery.policy.decide` climbs
them.
"""


from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from autotune.detect import Reason
from autotune.events import BATCH_ACTION

__all__ = ["DEFAULT_LADDERS", "INSTABILITY_REASONS", "NONFINITE_REASONS", "ROLLBACKS", "Action",
           "Ladder", "RecoveryConfig", "Rung"]


class Action(str, Enum):
    """One configuration change a recovery can make."""

    LOWER_LR = "lower_lr"
    CUT_LR = "cut_lr"
    SMOOTHING_OFF = "smoothing_off"
    AUGMENTATION_ON = "augmentation_on"
    AUGMENTATION_OFF = "augmentation_off"
    LONGER_WARMUP = "longer_warmup"
    TIGHTER_CLIP = "tighter_clip"
    CLIP_ON = "clip_on"
    MORE_WEIGHT_DECAY = "more_weight_decay"
    SKIP_BATCHES = "skip_batches"
    SKIP_BATCH = BATCH_ACTION


Rung = tuple[Action, ...]
Ladder = tuple[Rung, ...]

_INSTABILITY: Ladder = (
    # Smoothing on before the model has learned raises the loss floor and pushes logits.
    (Action.SMOOTHING_OFF,),
    (Action.LOWER_LR,),
    (Action.LOWER_LR,),
    (Action.LONGER_WARMUP, Action.LOWER_LR),
    (Action.TIGHTER_CLIP, Action.LOWER_LR),
)
DEFAULT_LADDERS: Mapping[Reason, Ladder] = MappingProxyType({
    Reason.NONFINITE_LOSS: _INSTABILITY,
    Reason.NONFINITE_GRAD: _INSTABILITY,
    Reason.LOSS_INCREASE: _INSTABILITY,
    Reason.GRAD_EXPLOSION: _INSTABILITY,
    # PaLM's remedy for a spike: restart before it and skip the batches around it.
    Reason.LOSS_SPIKE: (
        (Action.SKIP_BATCHES, Action.CLIP_ON),
        (Action.SKIP_BATCHES, Action.LOWER_LR),
        (Action.SKIP_BATCHES, Action.LOWER_LR, Action.TIGHTER_CLIP),
    ),
    # Stuck at the colour frequencies: restart from the last weights that still learned with
    # a third of the rate and clipping; a second collapse means a rate far above the edge: a
    # tenth (measured: docs/decisions.md, "The collapse ladder").
    Reason.COLLAPSED: (
        (Action.CLIP_ON, Action.LOWER_LR),
        (Action.CUT_LR,),
        (Action.LOWER_LR, Action.LONGER_WARMUP),
    ),
    # Regularise, never just slow down: the rollback to the best epoch already stops early.
    Reason.OVERFITTING: (
        (Action.AUGMENTATION_ON,),
        (Action.MORE_WEIGHT_DECAY,),
        (Action.MORE_WEIGHT_DECAY, Action.LOWER_LR),
    ),
})
ROLLBACKS = ("best", "before_trouble")
INSTABILITY_REASONS = frozenset({Reason.NONFINITE_LOSS, Reason.NONFINITE_GRAD,
                                  Reason.LOSS_INCREASE, Reason.GRAD_EXPLOSION})
NONFINITE_REASONS = frozenset({Reason.NONFINITE_LOSS, Reason.NONFINITE_GRAD})


@dataclass(frozen=True)
class RecoveryConfig:
    """The policy's knobs: budget, factors, ladders, rollback rule."""

    max_recoveries: int = 4
    """Recoveries allowed per run; the next verdict gives up."""
    lr_factor: float = 1 / 3
    """LOWER_LR multiplies the learning rate by this ..."""
    cut_lr_factor: float = 0.1
    """... and CUT_LR (a repeated collapse) by this."""
    clip_factor: float = 0.5
    """TIGHTER_CLIP multiplies grad_clip by this ..."""
    clip_default: float = 1.0
    """... or sets it to this when clipping is off (CLIP_ON too)."""
    skip_radius: int = 2
    """SKIP_BATCHES skips steps [spike - radius, spike + radius]."""
    wd_factor: float = 2.0
    """MORE_WEIGHT_DECAY multiplies weight_decay by this ..."""
    wd_default: float = 0.01
    """... or sets it to this when weight decay is off."""
    ladders: Mapping[Reason, Ladder] = field(default_factory=lambda: DEFAULT_LADDERS, hash=False)
    """Per reason, the rungs to climb; given ladders replace the defaults of their reasons.
    A flat tuple of actions is read as one action per rung."""
    rollback: str = "best"
    """`best`: the best checkpoint before the trouble; `before_trouble`: the last one."""
    suspect_augmentation: bool = True
    """Switch augmentation off when instability follows a recovery that switched it on."""
    suspect_batch: bool = True
    """Blame the batch for a run's first non-finite value that came out of a healthy
    stretch (the detector's `sudden` evidence): roll back to the last checkpoint before it
    and skip that one batch, changing no hyperparameter."""

    def __post_init__(self) -> None:
        if isinstance(self.max_recoveries, bool) or not isinstance(self.max_recoveries, int) \
                or self.max_recoveries < 0:
            raise ValueError(
                f"max_recoveries must be a non-negative integer but got {self.max_recoveries}.")
        for name in ("lr_factor", "cut_lr_factor", "clip_factor"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive) but got {value}.")
        if not self.wd_factor > 1.0 or not math.isfinite(self.wd_factor):
            raise ValueError(f"wd_factor must be greater than 1 but got {self.wd_factor}.")
        for name in ("clip_default", "wd_default"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive but got {value}.")
        if isinstance(self.skip_radius, bool) or not isinstance(self.skip_radius, int) \
                or self.skip_radius < 0:
            raise ValueError(
                f"skip_radius must be a non-negative integer but got {self.skip_radius}.")
        if self.rollback not in ROLLBACKS:
            raise ValueError(f"rollback must be one of {', '.join(ROLLBACKS)} "
                             f"but got {self.rollback!r}.")
        merged = dict(DEFAULT_LADDERS)
        for reason, ladder in self.ladders.items():
            merged[Reason(reason)] = _ladder(Reason(reason), ladder)
        object.__setattr__(self, "ladders", MappingProxyType(merged))


def _ladder(reason: Reason, ladder: Iterable[Any]) -> Ladder:
    rungs = tuple((Action(r),) if isinstance(r, (str, Action)) else tuple(map(Action, r))
                  for r in ladder)
    if not rungs or any(not rung for rung in rungs):
        raise ValueError(f"the ladder of {reason.value} must be non-empty rungs of actions "
                         f"but got {ladder!r}.")
    return rungs
