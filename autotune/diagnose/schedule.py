"""The schedule check: does the applied learning rate follow the intended schedule?

Logs differ in where an epoch's learning rate is taken (its start or its end) and in
whether epochs count from 0 or 1, so each record is compared under every usual alignment
and the one that explains the trace best is kept. A schedule that departs from the
intended one is named by its pattern: flat after warmup (warmup code that overwrites the
scheduler), compounded (a manual warmup multiplied into a chainable scheduler), lowered
midway, too high, or departs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.intended import INTENDED_KEYS, Intended
from autotune.diagnose.prose import count, sci
from autotune.diagnose.timeline import Point, ep

__all__ = ["check_schedule", "warmup_fit"]

# The same 10% the supervisor allows an applied learning rate after a change
# (`autotune.recovery.lr_check`), as a fraction of the peak ...
LR_TOLERANCE = 0.10
LR_RATIO_TOLERANCE = 1.25  # ... and applied/intended outside [1/1.25, 1.25]
MISMATCH_SHARE = 0.2  # share of the records that must be off to call the schedule wrong


@dataclass(frozen=True)
class LrRow:
    point: Point
    position: float  # the (fractional) epoch of training the lr was applied at
    intended: Intended
    expected: float
    applied: float

    @property
    def deviation(self) -> float:
        return (self.applied - self.expected) / self.intended.learning_rate

    @property
    def ratio(self) -> float:
        return self.applied / self.expected if self.expected > 0 else math.inf

    @property
    def off(self) -> bool:
        if abs(self.deviation) <= LR_TOLERANCE:
            return False
        ratio = self.ratio
        return not 0 < ratio < math.inf or abs(math.log(ratio)) > math.log(LR_RATIO_TOLERANCE)


_Position = Callable[[Point], float]


def _alignments(points: Sequence[Point], steps_per_epoch: int | None
                ) -> list[tuple[str, _Position]]:
    """Where in training each record's lr may have been taken: logs differ in convention."""
    have_steps = all(p.step is not None for p in points)
    if steps_per_epoch and have_steps:
        return [("step", lambda p: (p.step or 0.0) / steps_per_epoch)]
    out: list[tuple[str, _Position]] = [
        ("epoch", lambda p: p.epoch),  # 0-based labels, lr at the start of the epoch
        ("epoch+1", lambda p: p.epoch + 1),  # 0-based labels, lr at the end
        ("epoch-1", lambda p: p.epoch - 1),  # 1-based labels, lr at the start
    ]
    spe = _estimate_steps_per_epoch(points) if have_steps else None
    if spe:
        out += [("step", lambda p: (p.step or 0.0) / spe),
                ("step+1", lambda p: ((p.step or 0.0) + 1) / spe)]
    return out


def _estimate_steps_per_epoch(points: Sequence[Point]) -> float | None:
    steps = [(p.epoch, p.step or 0.0) for p in points]
    ratios = [(s1 - s0) / (e1 - e0) for (e0, s0), (e1, s1) in zip(steps, steps[1:])
              if e1 > e0 and s1 > s0]
    return statistics.median(ratios) if ratios else None


def _lr_rows(points: Sequence[Point], intents: Sequence[tuple[Intended, ...]],
             position: _Position) -> list[LrRow]:
    rows = []
    for p in points:
        at = position(p)
        options = [LrRow(p, at, it, it.lr_at_epoch(at), p.lr or 0.0)
                   for it in intents[p.index]]
        rows.append(min(options, key=lambda r: abs(r.deviation)))
    return rows


def check_schedule(points: Sequence[Point], intents: Sequence[tuple[Intended, ...]],
                    steps_per_epoch: int | None) -> Finding | None:
    judged = [p for p in points if p.lr is not None and math.isfinite(p.lr)]
    if not judged:
        return None
    alignment, rows = _best_alignment(judged, intents, steps_per_epoch)
    if not _is_mismatch(rows):
        return None
    return _mismatchfinding(rows, [r for r in rows if r.off], alignment)


def _best_alignment(points: Sequence[Point], intents: Sequence[tuple[Intended, ...]],
                    steps_per_epoch: int | None) -> tuple[str, list[LrRow]]:
    candidates = [(name, _lr_rows(points, intents, position))
                  for name, position in _alignments(points, steps_per_epoch)]
    return min(candidates, key=lambda c: _fit(c[1]))


def warmup_fit(points: Sequence[Point], intended: Intended) -> tuple[int, float]:
    """Records off, then mean deviation, of `intended` under its best alignment."""
    judged = [p for p in points if p.lr is not None and math.isfinite(p.lr)]
    rows = _best_alignment(judged, [(intended,)] * len(points), None)[1]
    return sum(r.off for r in rows), statistics.fmean(abs(r.deviation) for r in rows)


def _is_mismatch(rows: Sequence[LrRow]) -> bool:
    off = sum(r.off for r in rows)
    return off >= 2 and off >= MISMATCH_SHARE * len(rows)


def _fit(rows: Sequence[LrRow]) -> tuple[bool, float, float, float]:
    """How well an alignment explains the applied lr (smaller is better).

    An alignment under which the trace follows the schedule wins. When none does: the one
    whose warmup matches best (a bug after warmup leaves the warmup intact), then the one
    with the steadiest applied/intended ratio after warmup (a schedule scaled by a
    constant is aligned when the ratio is constant), then the smallest deviation.
    """
    deviation = statistics.fmean(min(abs(r.deviation), 1.0) for r in rows)
    if not _is_mismatch(rows):
        return False, 0.0, 0.0, deviation
    warmup = [r for r in rows if r.position < r.intended.warmup_epochs]
    warmup_off = sum(r.off for r in warmup) / len(warmup) if warmup else 0.0
    logs = [math.log(r.ratio) for r in _after_warmup(rows) if 0 < r.ratio < math.inf]
    steadiness = statistics.pstdev(logs) if len(logs) > 1 else 0.0
    return True, round(warmup_off, 6), round(steadiness, 6), deviation


def _after_warmup(rows: Sequence[LrRow]) -> list[LrRow]:
    return [r for r in rows if r.position >= r.intended.warmup_epochs] or list(rows)


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to `n` items evenly spread over `items`, first and last included."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _mismatch_pattern(rows: Sequence[LrRow], post: Sequence[LrRow]) -> str:
    applied = [r.applied for r in post]
    expected = [r.expected for r in post]
    decays = min(expected) < 0.8 * max(expected)
    flat = max(applied) > 0 and max(applied) - min(applied) <= 0.05 * max(applied)
    if decays and flat and len(post) >= 3:
        return "flat_after_warmup"
    ratios = [r.ratio for r in post[len(post) // 2:] if math.isfinite(r.ratio)]
    median = statistics.median(ratios) if ratios else 1.0
    first_off = next(i for i, r in enumerate(rows) if r.off)
    if first_off >= 2 and median < 1 / LR_RATIO_TOLERANCE:
        return "lowered_midway"
    if median <= 0.5:
        return "compounded"
    if median >= 2.0:
        return "too_high"
    return "departs"


def _mismatchfinding(rows: Sequence[LrRow], bad: Sequence[LrRow], alignment: str
                      ) -> Finding:
    post = _after_warmup(rows)
    pattern = _mismatch_pattern(rows, post)
    first, last = post[0], post[-1]
    ratios = [r.ratio for r in post[len(post) // 2:] if math.isfinite(r.ratio)]
    median = statistics.median(ratios) if ratios else math.nan
    it = rows[0].intended
    samples = [{"epoch": r.point.epoch, "intended": r.expected, "applied": r.applied,
                "ratio": r.ratio} for r in _spread(post, 5)]
    evidence = {
        "pattern": pattern, "alignment": alignment, "records_checked": len(rows),
        "records_off": len(bad), "first_off_epoch": bad[0].point.epoch,
        "median_ratio_late": median, "ratio_at_end": last.ratio, "samples": samples,
        "intended": {k: getattr(it, k) for k in INTENDED_KEYS if k != "label_smoothing"},
    }
    where = (f"at epoch {_e(last)} intended {sci(last.expected)}, applied "
             f"{sci(last.applied)}")
    planned = (f"the intended {it.schedule} schedule (peak {sci(it.learning_rate)}, warmup "
               f"{count(it.warmup_epochs, 'epoch')}, {count(it.epochs, 'epoch')})")
    if pattern == "flat_after_warmup":
        level = statistics.median(r.applied for r in post)
        at_peak = abs(level - last.intended.learning_rate) <= 0.05 * last.intended.learning_rate
        message = (
            f"After warmup the applied learning rate stays flat at {sci(level)}"
            f"{' (the peak)' if at_peak else ''} from epoch {_e(first)} to {_e(last)} over "
            f"{len(post)} records, while {planned} decays it to {sci(last.expected)} "
            f"({where}: {last.ratio:.1f}x the intended). This is the classic bug of warmup "
            f"code that sets param_group['lr'] every step and so overwrites the scheduler: "
            f"the decay never happens, the late epochs run at the peak learning rate, and "
            f"the loss cannot settle.")
        fix = (f"remove the warmup code that writes param_group['lr'] every step; compute the "
               f"lr in one place as warmup multiplier x decay of the step (one LambdaLR, or "
               f"SequentialLR of LinearLR and CosineAnnealingLR), so that epoch {_e(last)} "
               f"runs at {sci(last.expected)} instead of {sci(last.applied)}.")
    elif pattern == "lowered_midway":
        off = bad[0]
        before = rows[rows.index(off) - 1]
        message = (
            f"The applied learning rate follows {planned} until epoch {_e(before)}, "
            f"then drops below it from epoch {_e(off)} on (intended {sci(off.expected)}, "
            f"applied {sci(off.applied)}; a median {median:.2g}x the intended later, {where}). "
            f"Something lowered the learning rate partway that the schedule does not know "
            f"about: a plateau scheduler, a manual change at a resume, or a recovery whose "
            f"event was not recorded.")
        fix = (f"if the drop was meant, judge the later epochs against the lowered peak (keep "
               f"events.jsonl with the run, or pass --lr); if not, find what wrote "
               f"param_group['lr'] at epoch {_e(off)}.")
    elif pattern == "compounded":
        message = (
            f"The applied learning rate settles far below {planned}: after warmup it is a "
            f"median {median:.2g}x the intended ({where}). This is the pattern of a manual "
            f"warmup multiplied into a chainable scheduler (param_group['lr'] *= factor "
            f"beside a scheduler that updates the current lr recursively, e.g. "
            f"CosineAnnealingLR or ExponentialLR in chained form): each scheduler update "
            f"compounds the lowered value, so the run trains about {1 / median:.0f}x slower "
            f"than planned and looks stuck.")
        fix = (f"drop the manual warmup multiplication, or fold warmup x decay into one "
               f"LambdaLR (or SequentialLR) that sets the lr from the step number; epoch "
               f"{_e(last)} should run at {sci(last.expected)}, not {sci(last.applied)}.")
    elif pattern == "too_high":
        message = (
            f"The applied learning rate is a median {median:.2g}x {planned} after warmup "
            f"({where}): something scales the learning rate beyond what was meant, so every "
            f"step is larger than planned.")
        fix = (f"find what scales the lr (a second scheduler, a batch-size or world-size "
               f"scaling, a peak set in two places) and make epoch {_e(last)} run at "
               f"{sci(last.expected)}.")
    else:
        off = bad[0]
        message = (
            f"The applied learning rate departs from {planned} in {len(bad)} of {len(rows)} "
            f"records, first at epoch {_e(off)} (intended {sci(off.expected)}, applied "
            f"{sci(off.applied)}; {where}): the run did not train with the schedule it "
            f"was meant to, so its losses say little about that schedule.")
        fix = (f"make the lr one function of the step (warmup x {it.schedule} decay) written "
               f"in one place, and check the intended values (--lr, --warmup-epochs, "
               f"--schedule, --epochs); epoch {_e(off)} should run at {sci(off.expected)}.")
    likelihood = None if pattern != "departs" else 0.9
    return finding(FindingCode.LR_SCHEDULE_MISMATCH, Severity.ERROR, message, evidence, fix,
                   likelihood)




def _e(row: LrRow) -> str:
    return ep(row.point)
