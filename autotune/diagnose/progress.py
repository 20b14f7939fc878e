"""A run that never learned: its loss flat from the first record (`not_learning`).

The rule is the detectors' `autotune.detect.flat_start` (thresholds in `DetectorConfig`):
no chance level is needed, the loss is compared with itself. Judged on the first line of
training (a rollback or an appended run starts another), on the training loss (its mean
per epoch when it is logged per step) and, when the log has one, the validation loss too:
both must be flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autotune.detect import DetectorConfig, Flat, flat_start
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.prose import sci
from autotune.diagnose.timeline import Context, Point, at, finite_prefix

__all__ = ["check_not_learning"]


def check_not_learning(ctx: Context, lines: Sequence[list[Point]], cfg: DetectorConfig
                       ) -> Finding | None:
    """`not_learning` when the first line's losses stayed flat from the start."""
    if not lines:
        return None
    pts, _ = finite_prefix(lines[0])
    train = [p.train_loss for p in pts if p.train_loss is not None]
    if ctx.per_step:
        train = _epoch_means(pts)  # flat from the first epoch, not over a few batches
    val = [p.val_loss for p in pts if p.val_loss is not None]
    judged = [(name, flat_start(values, cfg)) for name, values in
              (("training", train), ("validation", val)) if values]
    enough = [(name, f) for name, f in judged if f.records >= cfg.flat_min_records]
    if not enough or not all(f.flat for _, f in enough):
        return None
    name, flat = enough[0]
    return _finding(name, flat, pts, ctx)


def _epoch_means(pts: Sequence[Point]) -> list[float]:
    """The mean training loss of each epoch (of each record for a log without epochs)."""
    if pts and pts[0].unit == "step":
        return [p.train_loss for p in pts if p.train_loss is not None]
    means: dict[int, list[float]] = {}
    for p in pts:
        if p.train_loss is not None:
            means.setdefault(int(p.epoch), []).append(p.train_loss)
    return [math.fsum(v) / len(v) for v in means.values()]


def _finding(name: str, flat: Flat, pts: Sequence[Point], ctx: Context) -> Finding:
    first, last = pts[0], pts[-1]
    message = (f"The {name} loss has been flat from the start: {flat.start:.4g} over the first "
               f"fifth of {flat.records} records and {flat.end:.4g} over the last "
               f"({at(first)} to {at(last)}; {100 * flat.drop:+.1f}%"
               f", record-to-record noise {flat.noise:.3g}). A run that learns drops its loss "
               f"early; this one never did, so whatever it trains for is lost.")
    chance = math.log(ctx.classes) if ctx.classes else None
    if chance is not None:
        message += (f" A uniform guess over {ctx.classes} classes scores {chance:.4g}"
                    + (", the level it sits at." if abs(flat.end - chance) <= 0.05 * chance
                       else "."))
    lrs = [p.lr for p in pts if p.lr is not None and math.isfinite(p.lr)]
    if lrs and max(lrs) > 0:
        message += f" The learning rate went up to {sci(max(lrs))}."
    fix = ("check that the optimizer steps the model's parameters and that the labels match "
           "the inputs (a shuffled or constant target learns nothing); then try the "
           "learning rate 3x lower and 3x higher for a few epochs each: too high a rate "
           "pins a model at a trivial answer, too low a rate barely moves it.")
    evidence = {"series": name, "start_loss": flat.start, "end_loss": flat.end,
                "relative_drop": flat.drop, "noise": flat.noise, "records": flat.records,
                "chance_loss": chance, "began_epoch": first.epoch, "began_step": first.step,
                "lr_max": max(lrs) if lrs else None}
    return finding(FindingCode.NOT_LEARNING, Severity.WARNING, message, evidence, fix)
