"""A history as points on lines of training, and what a finding needs to know about the run.

A history is the records in the order written. A rollback (our runs) or a restart (a log
that was appended to) makes the epoch or step go back: the history is then cut into
segments, each one line of training, and the loss checks judge each on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.diagnose.intended import Intended
from autotune.diagnose.prose import Terms
from autotune.diagnose.readers.columns import number
from autotune.diagnose.thresholds import NEAR_PEAK
from autotune.errors import ConfigError, excerpt

__all__ = ["Context", "Point", "at", "ep", "finite_prefix", "intents", "points", "segments"]



@dataclass(frozen=True)
class Point:
    index: int
    epoch: float
    global_epoch: float
    step: float | None
    train_loss: float | None
    val_loss: float | None
    lr: float | None
    grad_norm: float | None
    global_logged: bool = False  # the record carried its own global_epoch
    unit: str = "epoch"  # what `epoch` counts: "step" for a log without epochs


@dataclass(frozen=True)
class Context:
    """The points and what the findings need to know about the run that logged them."""

    points: list[Point]
    intents: list[tuple[Intended, ...]] | None  # the schedules that may have been in force
    peak_lr: float | None  # the highest applied learning rate
    schedule_bug: str | None  # the pattern of the lr_schedule_mismatch finding, if any
    terms: Terms
    per_step: bool = False  # the training loss is logged per step (or every few), not epoch
    classes: int | None = None  # output classes, when known

    @property
    def has_lr(self) -> bool:
        return self.peak_lr is not None

    def base_lr(self, point: Point) -> float | None:
        """The peak learning rate the run meant to use at `point`."""
        if self.intents is not None:
            return self.intents[point.index][0].learning_rate
        return self.peak_lr

    def lr_fraction(self, lr: float | None) -> float | None:
        if lr is None or self.peak_lr is None:
            return None
        return lr / self.peak_lr

    def near_peak(self, lr: float | None) -> bool:
        fraction = self.lr_fraction(lr)
        return fraction is not None and fraction >= NEAR_PEAK


def points(history: Sequence[Mapping[str, Any]], unit: str = "epoch") -> list[Point]:
    out = []
    for i, record in enumerate(history):
        epoch = _value(record, i, "epoch")
        global_epoch = _value(record, i, "global_epoch")
        out.append(Point(
            i, float(i) if epoch is None else epoch,
            float(i + 1) if global_epoch is None else global_epoch,
            _value(record, i, "step"), _value(record, i, "train_loss", "loss"),
            _value(record, i, "val_loss"), _value(record, i, "lr", "learning_rate"),
            _value(record, i, "grad_norm"), global_epoch is not None, unit))
    return out


def _value(record: Mapping[str, Any], index: int, key: str, alias: str = "") -> float | None:
    raw = record.get(key)
    if raw is None and alias:
        raw = record.get(alias)
    if type(raw) is float or raw is None:  # what the readers give: no checks to make
        return raw
    try:
        return number(raw)
    except (ValueError, OverflowError):
        raise ConfigError(f"history record {index}: {key} is {excerpt(raw)}, not a "
                          f"number.") from None


def ep(point: Point) -> str:
    """An epoch label; with the global epoch when a rollback made the two differ."""
    if point.unit == "step":
        return f"{point.epoch:g}"
    if point.global_logged and point.global_epoch != point.epoch:
        return f"{point.epoch:g} (global epoch {point.global_epoch:g})"
    return f"{point.epoch:g}"


def at(point: Point) -> str:
    """`epoch 7 (step 350)`, or `step 350` for a log without epochs."""
    if point.unit == "step":
        return f"step {point.epoch:g}"
    return f"epoch {ep(point)}" + (f" (step {point.step:g})" if point.step is not None else "")


def event_epoch(event: Mapping[str, Any]) -> float | None:
    try:
        return number(event.get("global_epoch"))
    except (ValueError, OverflowError):
        return None


def intents(pts: Sequence[Point], intended: Intended,
            events: Sequence[Mapping[str, Any]]) -> list[tuple[Intended, ...]]:
    """The schedule in force at each point; a point at an event's epoch may have either."""
    timeline: list[tuple[float, Intended]] = []
    current = intended
    changes = [(g, e["changes"]) for e in events
               if isinstance(e.get("changes"), Mapping) and e["changes"]
               and (g := event_epoch(e)) is not None]
    for g, change in sorted(changes, key=lambda item: item[0]):
        current = current.with_changes(change)
        timeline.append((g, current))
    out = []
    for p in pts:
        before = intended
        at_event = []
        for g, state in timeline:
            if g < p.global_epoch:
                before = state
            elif g == p.global_epoch:
                at_event.append(state)
        out.append((before, *at_event))
    return out


def segments(pts: Sequence[Point], events: Sequence[Mapping[str, Any]]) -> list[list[Point]]:
    """The history cut where it goes back (a rollback, a restart): one line of training each."""
    rollbacks = {g for e in events
                 if e.get("rolled_back_to") is not None and (g := event_epoch(e)) is not None}
    out: list[list[Point]] = [[pts[0]]]
    for previous, point in zip(pts, pts[1:]):
        if previous.step is not None and point.step is not None:
            back = point.step <= previous.step
        else:
            back = point.epoch < previous.epoch
        if back or previous.global_epoch in rollbacks:
            out.append([])
        out[-1].append(point)
    return out


def finite_prefix(segment: Sequence[Point]) -> tuple[list[Point], bool]:
    """The points before the first non-finite loss, and whether one cut the segment."""
    for i, p in enumerate(segment):
        if any(v is not None and not math.isfinite(v) for v in (p.train_loss, p.val_loss)):
            return list(segment[:i]), True
    return list(segment), False
