"""The learning-rate schedule a run was meant to follow, and the floor label smoothing sets."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autotune.errors import ConfigError, excerpt
from trainer.config import TrainConfig
from trainer.schedule import lr_at_epoch

__all__ = ["INTENDED_KEYS", "RUN_CLASSES", "Intended", "new_value", "smoothing_floor"]

RUN_CLASSES = 12  # our ARC runs: 10 colours + PAD + the end-of-grid marker
INTENDED_KEYS = ("learning_rate", "warmup_epochs", "schedule", "epochs", "label_smoothing",
                 "min_lr_ratio")


@dataclass(frozen=True)
class Intended:
    """The learning-rate schedule a run was meant to follow, and its label smoothing.

    Validated like a TrainConfig (ConfigError naming the key). `num_classes` is the number
    of output classes (12 for our runs; `--classes` for a log; None: not known, and then
    neither the chance level nor a smoothing floor is judged). `assumed` names the keys
    nobody gave (a log's flags left them out), which weakens a schedule mismatch judged
    against them.
    """

    learning_rate: float
    warmup_epochs: float
    schedule: str
    epochs: int
    label_smoothing: float = 0.0
    min_lr_ratio: float = 0.05
    num_classes: int | None = None
    assumed: tuple[str, ...] = ()
    config: TrainConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        config = TrainConfig().replace(**{k: getattr(self, k) for k in INTENDED_KEYS})
        for key in INTENDED_KEYS:
            object.__setattr__(self, key, getattr(config, key))
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "assumed", tuple(self.assumed))
        check_classes(self.num_classes)
        unknown = [key for key in self.assumed if key not in INTENDED_KEYS]
        if unknown:
            raise ConfigError(f"assumed must name keys among {', '.join(INTENDED_KEYS)} but "
                              f"got {excerpt(unknown[0])}.")

    @classmethod
    def from_config(cls, config: TrainConfig, num_classes: int | None = RUN_CLASSES
                    ) -> Intended:
        """The schedule a TrainConfig asks for."""
        return cls(**{k: getattr(config, k) for k in INTENDED_KEYS}, num_classes=num_classes)

    def with_changes(self, changes: Mapping[str, Any]) -> Intended:
        """A copy with the schedule keys of `changes` applied ({key: [old, new]} or new)."""
        updates = {k: new_value(v) for k, v in changes.items() if k in INTENDED_KEYS}
        return dataclasses.replace(self, **updates) if updates else self

    def lr_at_epoch(self, epoch: float) -> float:
        """The intended learning rate at a (fractional) epoch of training."""
        return lr_at_epoch(max(epoch, 0.0), self.config)

    @property
    def weak(self) -> bool:
        """The planned epochs or the schedule were only assumed (a log stops early)."""
        return "epochs" in self.assumed or "schedule" in self.assumed


def check_classes(k: Any) -> None:
    """ConfigError unless `k` is None or an integer >= 2."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
        raise ConfigError(f"num_classes (--classes) must be an integer >= 2 but got {excerpt(k)}.")


def new_value(change: Any) -> Any:
    """The new value of a change given as [old, new] (or as the new value alone)."""
    if isinstance(change, (list, tuple)) and len(change) == 2:
        return change[1]
    return change


def smoothing_floor(label_smoothing: float, num_classes: int) -> float:
    """The lowest cross-entropy reachable with label smoothing: the smoothed target's entropy.

    The smoothed target puts 1 - eps + eps/K on the true class and eps/K on each other one.
    """
    if label_smoothing <= 0.0:
        return 0.0
    on = 1.0 - label_smoothing + label_smoothing / num_classes
    off = label_smoothing / num_classes
    return -on * math.log(on) - (num_classes - 1) * off * math.log(off)
