"""The learning-rate change check: did the trainer apply the rate recovery asked for?

After a recovery multiplies the learning rate by f, the rate the trainer reports for an
epoch of the resumed timeline should be f times the rate it reported for the same logical
epoch before the rollback (the same point of its schedule). A trainer whose scheduler
rebuilds the rate from its own base rate (a `torch.optim.lr_scheduler` restored from an
older state, say) undoes the cut; one that multiplies on top compounds it. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["LR_TOLERANCE", "LrExpectation", "comparable", "expect", "judge"]

LR_TOLERANCE = 0.10
"""|applied / expected - 1| above this is a rate the trainer did not apply."""


@dataclass(frozen=True)
class LrExpectation:
    """The rate expected at logical `epoch` after a cut by `factor` (from `before`)."""

    epoch: int
    before: float
    factor: float
    step: int | None = None
    """The logical step that epoch ended at before the rollback: the schedule's position
    the rates compare at (None: not recorded)."""

    @property
    def expected(self) -> float:
        return self.before * self.factor


def expect(changes: Mapping[str, Sequence[Any]], undone: Sequence[Mapping[str, Any]],
           resume_epoch: int, since_global_epoch: int = 0) -> LrExpectation | None:
    """What to check after a recovery with `changes` that resumes at `resume_epoch`.

    None when the recovery did not change the learning rate alone (a new warmup or schedule
    moves the rate for other reasons), or when no record of the next logical epoch was
    reported before the rollback (`undone`: the records the rollback took off the timeline)
    under the rate this recovery changed: a record from before an earlier recovery's rate
    change (`global_epoch` at most `since_global_epoch`) ran at another base rate.
    """
    if "learning_rate" not in changes or {"warmup_epochs", "schedule"} & set(changes):
        return None
    old, new = (float(v) for v in changes["learning_rate"])
    if not (old > 0 and math.isfinite(new)):
        return None
    epoch = resume_epoch + 1
    record = next((r for r in undone if int(r["epoch"]) == epoch
                   and int(r.get("global_epoch", since_global_epoch + 1)) > since_global_epoch),
                  None)
    before = None if record is None else _lr(record)
    if before is None or not before > 0:
        return None
    step = record.get("step") if record is not None else None
    return LrExpectation(epoch, before, new / old, None if step is None else int(step))


def comparable(expectation: LrExpectation, record: Mapping[str, Any]) -> bool:
    """Whether `record` is the epoch the expectation is about, ended at the same point of
    the schedule (an epoch shortened by a rollback in its middle ends at another step)."""
    if int(record["epoch"]) != expectation.epoch:
        return False
    step = record.get("step")
    return expectation.step is None or step is None or int(step) == expectation.step


def judge(expectation: LrExpectation, applied: float | None) -> str | None:
    """A sentence naming the trainer's scheduler when the applied rate is off, else None."""
    if applied is None or not math.isfinite(applied):
        return None
    expected = expectation.expected
    if abs(applied / expected - 1.0) <= LR_TOLERANCE:
        return None
    moved = applied / expectation.before
    how = "undid the cut" if abs(moved - 1.0) <= LR_TOLERANCE else (
        "compounded the cut" if moved < expectation.factor else "did not apply the cut fully")
    return (f"After recovery multiplied the learning rate by {expectation.factor:.3g}, the "
            f"trainer applied {applied:.4g} at epoch {expectation.epoch}, where "
            f"{expected:.4g} was expected ({expectation.before:.4g} before the rollback, "
            f"times {expectation.factor:.3g}): the trainer's learning-rate scheduler {how}. "
            f"A scheduler restored by load_state_dict, or one that computes the rate from its "
            f"own base rate, overrides apply_changes; make apply_changes set the scheduler's "
            f"base rate (e.g. `scheduler.base_lrs`) as well, after any load_state_dict.")


def _lr(record: Mapping[str, Any]) -> float | None:
    value = record.get("lr")
    return None if value is None else float(value)
