"""A run that never learned: its loss flat from the first record (`not_learning`).

The rule is the detectors' `autotune.detect.flat_start` (thresholds in `DetectorConfig`):
no chance level is needed, the loss is compared with itself. Judged on the first line of
training (a rollback or an appended run starts another), on the training loss (its mean
per epoch when it is logged per step) and, when the log has one, the validation loss too:
both must be flat.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from autotune.detect import DetectorConfig, Flat, check_collapse, flat_start
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.prose import sci
from autotune.diagnose.timeline import Context, Point, at, finite_prefix

__all__ = ["check_at_chance", "check_not_learning", "check_stalled_at_peak"]


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


def check_stalled_at_peak(ctx: Context, lines: Sequence[list[Point]], cfg: DetectorConfig
                          ) -> Finding | None:
    """`lr_too_high` when the training loss did not fall while the learning rate was at its
    peak (flat or rising, `flat_start`) and fell once the rate was lowered: the run could
    learn, only not at that rate. A healthy run falls at its peak rate too."""
    if not lines or ctx.peak_lr is None:
        return None
    pts, _ = finite_prefix(lines[0])
    series = [p for p in pts if p.train_loss is not None]
    at_peak = 0
    while at_peak < len(series) and ctx.near_peak(series[at_peak].lr):
        at_peak += 1
    peak, after = series[:at_peak], series[at_peak:]
    if len(peak) < cfg.flat_min_records or len(after) < cfg.flat_min_records:
        return None
    during = flat_start([p.train_loss for p in peak if p.train_loss is not None], cfg)
    if during.fell:
        return None
    later = flat_start([loss for loss in (peak[-1].train_loss, *(p.train_loss for p in after))
                        if loss is not None], cfg)  # none is None: `series` has them all
    lowest = min(p.train_loss for p in after if p.train_loss is not None)
    if not (later.fell or lowest < during.end * (1.0 - cfg.flat_max_drop)) or (
            lowest >= during.start):
        return None
    first, cut = peak[0], after[0]
    message = (f"The training loss did not fall while the learning rate was at its peak "
               f"({sci(ctx.peak_lr)}): {during.start:.4g} at first and {during.end:.4g} at the "
               f"end of the {len(peak)} records from {at(first)} to {at(peak[-1])}; once the "
               f"rate was lowered ({sci(cut.lr)} at {at(cut)}) it fell to {lowest:.4g}. The "
               f"model can learn, only not at that rate: its steps are too large.")
    fix = (f"{ctx.terms.lower_lr(ctx.peak_lr)} (or lower: the loss fell at {sci(cut.lr)}), "
           f"and {ctx.terms.clip}.")
    evidence = {"kind": "stalled_at_peak", "lr_peak": ctx.peak_lr, "start_loss": during.start,
                "end_loss": during.end, "records_at_peak": len(peak),
                "began_epoch": first.epoch, "began_step": first.step,
                "lowered_at_epoch": cut.epoch, "lowered_lr": cut.lr, "lowest_after": lowest,
                "suggested_learning_rate": ctx.peak_lr / 3}
    return finding(FindingCode.LR_TOO_HIGH, Severity.ERROR, message, evidence, fix)


def check_at_chance(ctx: Context, lines: Sequence[list[Point]], cfg: DetectorConfig
                    ) -> Finding | None:
    """`collapsed` for a log of any trainer with a known number of classes: the loss sat at
    the chance level ln K (a uniform guess), by the detectors' collapse rule
    (`check_collapse`, with ln K as the trivial level) applied along each line of training;
    the validation loss where the log has one, else the training loss."""
    if not ctx.classes or ctx.classes < 2:
        return None
    chance = math.log(ctx.classes)
    level_cfg = dataclasses.replace(cfg, marginal_loss=chance, train_marginal_loss=None)
    for line in lines:
        pts, _ = finite_prefix(line)
        use_val = any(p.val_loss is not None for p in pts)
        records = []
        for p in pts:
            loss = p.val_loss if use_val else p.train_loss
            if loss is None:
                continue
            records.append({"epoch": p.epoch, "val_loss": loss, "train_loss": math.nan})
            verdict = check_collapse(records, level_cfg)
            if verdict:
                return _at_chance(p, verdict.evidence, chance, use_val, records, ctx)
    return None


def _at_chance(point: Point, evidence: dict[str, float], chance: float, val: bool,
               records: list[dict[str, float]], ctx: Context) -> Finding:
    which = "validation" if val else "training"
    learned = [r["epoch"] for r in records if r["val_loss"] < evidence["low"]]
    since = evidence["since_epoch"]
    message = (f"The {which} loss has sat at {evidence['val_loss']:.4g} since epoch "
               f"{since:g}, the {chance:.4g} of a uniform guess over {ctx.classes} classes: "
               f"the model predicts nothing about its inputs"
               + (f", though it was below that level at epoch {learned[-1]:g}: it learned, "
                  f"then fell back to the trivial answer." if learned else
                  ", and never got below it."))
    lr = ctx.base_lr(point) or point.lr
    fix = ("train again from the start (a model at the trivial answer rarely comes back when "
           "the rate is lowered) with the learning rate "
           + (f"{sci(lr / 3, 2)} (1/3 of {sci(lr, 2)})" if lr else "x 1/3")
           + f" and {ctx.terms.clip}; check that the labels match the inputs.")
    ev = {**evidence, "epoch": point.epoch, "chance_loss": chance, "classes": ctx.classes,
          "series": which, "last_learning_epoch": learned[-1] if learned else None,
          "began_epoch": since, "suggested_learning_rate": lr / 3 if lr else None}
    return finding(FindingCode.COLLAPSED, Severity.ERROR, message, ev, fix)
