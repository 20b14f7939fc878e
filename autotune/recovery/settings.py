"""How a run is supervised: recovery on, off or watch, its budget, thresholds, checkpoints.

These are the supervisor's settings, not the trainer's. In a run's flat YAML mapping
(`config.yaml`, `--set`) they sit beside the trainer's keys under the contract's names
(`max_loss_increase`, `max_recoveries`, `recovery`, `keep_checkpoints`, `extra_epochs`,
`alarm_only`); `split` takes them out of such a mapping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from autotune.detect import Reason
from autotune.errors import ConfigError, excerpt

__all__ = ["SUPERVISOR_KEYS", "RecoveryMode", "SupervisorConfig", "split"]


class RecoveryMode(str, Enum):
    """What the supervisor does about a divergence."""

    ON = "on"
    """Roll back, change the likely cause, resume (within the budget)."""
    OFF = "off"
    """Stop the run at the first divergence (status `diverged`)."""
    WATCH = "watch"
    """Record an `alarm` event and change nothing; the run goes on."""

    @classmethod
    def parse(cls, value: Any, name: str = "recovery") -> RecoveryMode:
        """A mode from `on`/`off`/`watch` (or a bool, as older run files wrote it)."""
        if isinstance(value, RecoveryMode):
            return value
        if isinstance(value, bool):
            return cls.ON if value else cls.OFF
        try:
            return cls(str(value))
        except ValueError:
            raise ConfigError(f"{name} must be on, off or watch but got "
                              f"{excerpt(value)}.") from None


@dataclass(frozen=True)
class SupervisorConfig:
    """The supervisor's settings for one run."""

    recovery: RecoveryMode = RecoveryMode.ON
    """on, off or watch (see RecoveryMode)."""
    max_recoveries: int = 4
    """Recoveries allowed before the run gives up."""
    max_loss_increase: float = 0.3
    """Divergence threshold: validation loss above its best + this."""
    keep_checkpoints: int = 3
    """How many of the latest checkpoints to keep (the best and the initial are kept too)."""
    extra_epochs: int | None = None
    """Epochs a run may train beyond its planned ones to replay what rollbacks undid; at
    that many it ends with its best model (completed). None: as many as it takes to reach
    the planned epochs on the surviving timeline. 0 makes a recovered run cost what the
    same run without recovery costs (BENCHMARKS.md, ninth session: in a search under an
    epoch budget it was tried and not adopted)."""
    alarm_only: Sequence[str] = ()
    """Reasons (the contract's `reason` strings; one reason alone reads as a list of it;
    kept as a tuple) that only raise an `alarm` event, once a
    run, whatever the recovery mode: the run goes on unchanged. A search sets
    `("overfitting",)` (`autotune.search.setup.SEARCH_ALARM_ONLY`): a trial's value is its
    best validation loss, which overfitting does not take away."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "recovery", RecoveryMode.parse(self.recovery))
        object.__setattr__(self, "alarm_only", _reasons(self.alarm_only, "alarm_only"))
        for name, low in (("max_recoveries", 0), ("keep_checkpoints", 2)):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
                object.__setattr__(self, name, value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer but got {excerpt(value)}.")
            if value < low:
                raise ConfigError(f"{name} must be >= {low} but got {excerpt(value)}.")
        extra: Any = self.extra_epochs
        if extra is not None:
            if isinstance(extra, float) and extra.is_integer():
                extra = int(extra)
                object.__setattr__(self, "extra_epochs", extra)
            if isinstance(extra, bool) or not isinstance(extra, int) or extra < 0:
                raise ConfigError(f"extra_epochs must be an integer >= 0 or null but got "
                                  f"{excerpt(extra)}.")
        value = self.max_loss_increase
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"max_loss_increase must be a number but got {excerpt(value)}.")
        if not math.isfinite(value):
            raise ConfigError(f"max_loss_increase must be a finite number > 0 but got "
                              f"{excerpt(value)}.")
        if not value > 0:
            raise ConfigError(f"max_loss_increase must be > 0 but got {excerpt(value)}.")
        object.__setattr__(self, "max_loss_increase", float(value))

    def to_dict(self) -> dict[str, Any]:
        """The YAML mapping (the mode as its string)."""
        out = dataclasses.asdict(self)
        out["recovery"] = self.recovery.value
        out["alarm_only"] = list(self.alarm_only)
        return out

    def replace(self, **changes: Any) -> SupervisorConfig:
        return dataclasses.replace(self, **changes)


def _reasons(value: Any, name: str) -> tuple[str, ...]:
    """A list of the contract's reason strings as a tuple, or ConfigError naming them."""
    allowed = [r.value for r in Reason]
    items = [value] if isinstance(value, str) else value
    if items is None:
        items = ()
    if not isinstance(items, (list, tuple)) or not all(
            isinstance(i, str) and i in allowed for i in items):
        raise ConfigError(f"{name} must be a list of reasons ({', '.join(allowed)}) but got "
                          f"{excerpt(value)}.")
    return tuple(dict.fromkeys(items))


SUPERVISOR_KEYS = tuple(f.name for f in dataclasses.fields(SupervisorConfig))


def split(mapping: Mapping[str, Any]) -> tuple[dict[str, Any], SupervisorConfig]:
    """(the trainer's keys, the supervisor's settings) of a flat run mapping."""
    rest = {k: v for k, v in mapping.items() if k not in SUPERVISOR_KEYS}
    mine = {k: v for k, v in mapping.items() if k in SUPERVISOR_KEYS}
    return rest, SupervisorConfig(**mine)
