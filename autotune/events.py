"""The event model: what happened to a run (kinds, statuses) and the timeline that survives.

A run's `events.jsonl` holds one `Event` per divergence, recovery, give-up, alarm, resume
or interruption; its `metrics.jsonl` one record per epoch of compute. A rollback makes the
logical epoch go back, so the records of the epochs it undid stay in the file (they were
compute spent) but leave the run's timeline: `surviving` is the one function that says
which records are still on it. Counts (divergences, recoveries) are derived from the
events, never kept beside them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

__all__ = [
    "BATCH_ACTION",
    "Event",
    "EventCounts",
    "EventKind",
    "RunStatus",
    "changes_of",
    "count",
    "describe_changes",
    "fmt",
    "surviving",
]

BATCH_ACTION = "skip_batch"
"""The recovery action that puts a divergence down to its batch
(`autotune.recovery.ladders.Action.SKIP_BATCH` has this value)."""


class EventKind(str, Enum):
    """The `kind` of an events.jsonl record (the contract's strings)."""

    DIVERGED = "diverged"
    RECOVERED = "recovered"
    GAVE_UP = "gave_up"
    ALARM = "alarm"
    RESUMED = "resumed"
    INTERRUPTED = "interrupted"


class RunStatus(str, Enum):
    """How a supervised run ended."""

    COMPLETED = "completed"
    """Ran its planned epochs and ended stable."""
    DIVERGED = "diverged"
    """Recovery off: stopped at the first divergence."""
    GAVE_UP = "gave_up"
    """The recovery budget was spent (or no change was left to make)."""


@dataclass(frozen=True)
class Event:
    """One events.jsonl record. `changes` maps a key to `[old, new]`."""

    kind: EventKind
    reason: str
    epoch: int
    global_epoch: int
    rolled_back_to: int | None = None
    changes: dict[str, list[Any]] = field(default_factory=dict)
    step: int | None = None
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    explanation: str = ""
    level: int | None = None
    """The ladder rung a recovery used (None: not a ladder step)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (kind as its string; empty optional fields left out)."""
        out: dict[str, Any] = {"kind": self.kind.value, "reason": self.reason,
                               "epoch": self.epoch, "global_epoch": self.global_epoch,
                               "rolled_back_to": self.rolled_back_to,
                               "changes": {k: list(v) for k, v in self.changes.items()}}
        if self.step is not None:
            out["step"] = self.step
        for name in ("message", "evidence", "actions", "explanation"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.kind is EventKind.RECOVERED or self.level is not None:
            out["level"] = self.level
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Event:
        """An Event from a JSON record (older records may lack the optional fields)."""
        changes = record.get("changes") or {}
        return cls(kind=EventKind(record["kind"]), reason=str(record.get("reason", "")),
                   epoch=int(record.get("epoch") or 0),
                   global_epoch=int(record.get("global_epoch") or 0),
                   rolled_back_to=_int_or_none(record.get("rolled_back_to")),
                   changes={str(k): list(v) for k, v in changes.items()},
                   step=_int_or_none(record.get("step")),
                   message=str(record.get("message") or ""),
                   evidence=dict(record.get("evidence") or {}),
                   actions=[str(a) for a in record.get("actions") or ()],
                   explanation=str(record.get("explanation") or ""),
                   level=_int_or_none(record.get("level")))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _as_event(item: Event | Mapping[str, Any]) -> Event:
    return item if isinstance(item, Event) else Event.from_dict(item)


def count(events: Iterable[Event | Mapping[str, Any]], kind: EventKind) -> int:
    """How many events of `kind` there are."""
    return sum(_as_event(e).kind is kind for e in events)


def changes_of(events: Iterable[Event | Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Every key recovery changed: [value before the first change, value after the last]."""
    changed: dict[str, list[Any]] = {}
    for item in events:
        event = _as_event(item)
        if event.kind is not EventKind.RECOVERED:
            continue
        for key, (old, new) in event.changes.items():
            changed[key] = [changed.get(key, [old])[0], new]
    return changed


class EventCounts:
    """What a holder of `events` (a run's result, a trial's story) derives from them."""

    events: list[Event]

    @property
    def divergences(self) -> int:
        return count(self.events, EventKind.DIVERGED)

    @property
    def recoveries(self) -> int:
        return count(self.events, EventKind.RECOVERED)

    @property
    def batch_skips(self) -> int:
        """Recoveries that put a divergence down to its batch (`skip_batch`): they skipped it
        and changed nothing else, so the configuration is not what diverged."""
        return sum(e.kind is EventKind.RECOVERED and e.actions == [BATCH_ACTION]
                   for e in self.events)

    @property
    def changes(self) -> dict[str, list[Any]]:
        return changes_of(self.events)


Record = TypeVar("Record", bound=Mapping[str, Any])


def surviving(records: Sequence[Record], key: str = "epoch") -> list[Record]:
    """The records still on the run's timeline, oldest first.

    `records` are in the order they were written, each with a logical epoch under `key`; a
    record whose epoch is not after the last kept one (a rollback happened) replaces the
    records it undid.
    """
    out: list[Record] = []
    for record in records:
        while out and out[-1][key] >= record[key]:
            out.pop()
        out.append(record)
    return out


# -- words and numbers --------------------------------------------------------------------

def fmt(value: Any, spec: str = ".4g") -> str:
    """A value for a message: floats with `spec`, None and non-finite floats as `-`, long
    step lists by their length."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format(value, spec)
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} steps]"
    return str(value)


def describe_changes(changes: Mapping[str, Sequence[Any]]) -> str:
    """`learning_rate 0.003 -> 0.001, label_smoothing 0.1 -> 0.0`, or `none`."""
    return ", ".join(f"{k} {_shown(v[0])} -> {_shown(v[1])}"
                     for k, v in changes.items()) or "none"


def _shown(value: Any) -> str:
    # A change to 0.0 reads as 0.0, not "-": only None is shown as missing here.
    return "None" if value is None else fmt(value)
