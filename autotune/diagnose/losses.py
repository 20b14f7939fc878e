"""The loss checks: non-finite values, a rising or oscillating training loss, a loss above
chance, and the floor label smoothing sets.

A rising training loss is `lr_too_high` when the learning rate was at or near its peak,
`loss_increase` otherwise (or when no learning rate was logged: then which it is cannot be
told, and the finding says so).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from autotune.detect import DetectorConfig, check_nonfinite
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.intended import smoothing_floor
from autotune.diagnose.prose import sci
from autotune.diagnose.thresholds import (
    EXPLAINED_LR_TOO_HIGH,
    NOISE_SIGMAS,
    OSCILLATION_SWING,
    RISE,
    SMOOTH_MIN,
    median_noise,
)
from autotune.diagnose.timeline import Context, Point, at, ep

__all__ = ["Episode", "check_above_chance", "check_nonfinite_points", "check_smoothing",
           "episode_finding", "find_oscillation", "find_rise"]



def check_nonfinite_points(ctx: Context) -> Finding | None:
    """The first NaN or infinite training loss, gradient norm or validation loss.

    The training loss and gradient norm are judged by the supervisor's own step check
    (`autotune.detect.check_nonfinite`); the validation loss is judged the same way.
    """
    names = {"train_loss": "training loss", "val_loss": "validation loss",
             "grad_norm": "gradient norm"}
    for i, p in enumerate(ctx.points):
        key, value = _nonfinite(p)
        if key is None:
            continue
        earlier = [q for q in ctx.points[:i] if q.train_loss is not None
                   and math.isfinite(q.train_loss)]
        lr = p.lr if p.lr is not None and math.isfinite(p.lr) else None
        fraction = ctx.lr_fraction(lr)
        where = at(p)
        message = (f"The {names[key]} became {value} at {where}"
                   + (f", with the learning rate at {sci(lr)}" if lr is not None else "")
                   + (f" ({fraction:.0%} of its peak)" if fraction is not None else "")
                   + (f"; the last finite training loss was {earlier[-1].train_loss:.4g} at "
                      f"{at(earlier[-1])}" if earlier else "")
                   + ". Every update after a non-finite loss or gradient corrupts the weights, "
                   "so what follows is not training.")
        base = ctx.base_lr(p)
        if ctx.near_peak(lr) and base is not None:
            fix = (f"{ctx.terms.lower_lr(base)}, keep gradient clipping on (e.g. 1.0), and "
                   f"resume from a checkpoint before {where}.")
        elif lr is None:
            fix = (f"{ctx.terms.skip_batches(where)}, look at {ctx.terms.numerics}, and lower "
                   f"the learning rate (a third is the usual step); resume from a checkpoint "
                   f"before it. The log has no learning rate, so whether it was at its peak "
                   f"cannot be told.")
        else:
            fix = (f"the learning rate was not at its peak, so "
                   f"{ctx.terms.skip_batches(where)} and look at {ctx.terms.numerics}; resume "
                   f"from a checkpoint before it.")
        evidence = {"epoch": p.epoch, "step": p.step, "key": key, "value": value, "lr": lr,
                    "lr_fraction_of_peak": fraction,
                    "last_finite_train_loss": earlier[-1].train_loss if earlier else None,
                    "last_finite_epoch": earlier[-1].epoch if earlier else None}
        if key == "grad_norm":
            return _nonfinite_grad(p, value, lr, earlier[-1] if earlier else None, ctx,
                                   evidence)
        return finding(FindingCode.NONFINITE_LOSS, Severity.ERROR, message, evidence, fix)
    return None


def _nonfinite_grad(p: Point, value: float, lr: float | None, last: Point | None,
                    ctx: Context, evidence: dict[str, Any]) -> Finding:
    """A NaN or infinite gradient norm beside a finite loss: an overflow in the backward
    pass (fp16 without a loss scaler, a bad batch), not yet a loss gone wrong."""
    where = at(p)
    loss = (f"while the training loss was still finite ({p.train_loss:.4g})"
            if p.train_loss is not None else "(no training loss logged there)")
    message = (f"The gradient norm became {value} at {where} {loss}"
               + (f", with the learning rate at {sci(lr)}" if lr is not None else "")
               + ". A non-finite gradient comes from the backward pass (an fp16 overflow, a "
               "bad batch, a division by zero) before the loss shows it; one update with it "
               "turns every weight it touches into NaN.")
    fix = (f"skip updates whose gradient is not finite (a loss scaler does this for fp16), "
           f"{ctx.terms.clip}, {ctx.terms.skip_batches(where)}, and look at "
           f"{ctx.terms.numerics}"
           + (f"; resume from a checkpoint before {where}" if last is not None else "") + ".")
    return finding(FindingCode.NONFINITE_GRAD, Severity.ERROR, message,
                   {**evidence, "train_loss": p.train_loss}, fix)


def _nonfinite(p: Point) -> tuple[str | None, float]:
    if p.train_loss is not None:
        step = p.step if p.step is not None and math.isfinite(p.step) else p.index
        verdict = check_nonfinite(p.train_loss, p.grad_norm, int(step or p.index))
        if verdict:
            key = "train_loss" if not math.isfinite(p.train_loss) else "grad_norm"
            return key, verdict.evidence[key.replace("train_", "")]
    elif p.grad_norm is not None and not math.isfinite(p.grad_norm):
        return "grad_norm", p.grad_norm
    if p.val_loss is not None and not math.isfinite(p.val_loss):
        return "val_loss", p.val_loss
    return None, math.nan


def check_smoothing(ctx: Context) -> Finding | None:
    if ctx.intents is None:
        return None
    on = [(p, its[0]) for p, its in zip(ctx.points, ctx.intents) if its[0].label_smoothing > 0]
    if not on:
        return None
    eps = max(it.label_smoothing for _, it in on)
    k = on[0][1].num_classes
    if k is None:
        return None  # the floor depends on the number of classes
    floor = smoothing_floor(eps, k)
    losses = [p.train_loss for p, _ in on if p.train_loss is not None
              and math.isfinite(p.train_loss)]
    vals = [p.val_loss for p in ctx.points if p.val_loss is not None
            and math.isfinite(p.val_loss)]
    low = min(losses) if losses else None
    message = (f"Label smoothing {eps:g} over {k} classes raises the floor of the training "
               f"loss: smoothed cross-entropy cannot fall below {floor:.3f} (the entropy of "
               f"the smoothed target)")
    if low is not None:
        message += f", and the lowest training loss here is {low:.3f} ({low - floor:.3f} above it)"
    message += (". The training loss is therefore not comparable with a validation loss "
                "computed without smoothing, nor with runs that use another smoothing, and a "
                f"training loss that flattens near {floor:.3f} is not a stall.")
    if vals:
        message += f" The validation loss (no smoothing) reached {min(vals):.3f}."
    if len(on) < len(ctx.points):
        message += f" Smoothing was off for {len(ctx.points) - len(on)} of the records."
    fix = (f"compare runs and pick checkpoints on val_loss (no smoothing); read the training "
           f"loss as {floor:.3f} + the reported excess; if the model has not learned anything "
           f"yet, set label_smoothing to 0.0 until it has.")
    evidence = {"label_smoothing": eps, "num_classes": k, "floor": floor,
                "min_train_loss": low, "excess": None if low is None else low - floor,
                "min_val_loss": min(vals) if vals else None}
    return finding(FindingCode.SMOOTHING_FLOOR, Severity.WARNING, message, evidence, fix)


@dataclass(frozen=True)
class Episode:
    """A stretch of the training loss that rose (or oscillated) against its best."""

    kind: str  # "rise" | "oscillation"
    series: list[tuple[Point, float]]
    best: int
    start: int
    end: int

    @property
    def stretch(self) -> list[tuple[Point, float]]:
        return self.series[self.start:self.end + 1]

    @property
    def lr(self) -> float | None:
        lrs = [p.lr for p, _ in self.stretch if p.lr is not None and math.isfinite(p.lr)]
        return max(lrs) if lrs else None


def _window(n: int) -> int:
    """The running median's window for a series of n records (1: not smoothed)."""
    if n < SMOOTH_MIN:
        return 1
    return min(max(2 * (n // 40) + 1, 3), 21)


def _smooth(values: Sequence[float]) -> list[float]:
    """A centred running median for long (per-step) logs; short ones are used as they are."""
    window = _window(len(values))
    if window == 1:
        return list(values)
    series = pd.Series(values).rolling(window, center=True, min_periods=1).median()
    return [float(v) for v in series]


def find_rise(series: list[tuple[Point, float]], need: int) -> Episode | None:
    """The first stretch of `need` records running that stay well above the best so far.

    Well above: by RISE of the best, and, for a long (per-step) series, by NOISE_SIGMAS
    times the noise left in its running median, measured from the series itself: a
    per-step loss swings by tens of percent from batch to batch, and a median of a few
    batches still by some, without the model getting worse.
    """
    raw = [v for _, v in series]
    values = _smooth(raw)
    window = _window(len(raw))
    floor = NOISE_SIGMAS * median_noise(raw, window) if window > 1 else 0.0
    best = 0
    start: int | None = None
    for i in range(1, len(values)):
        limit = values[best] + max(RISE * abs(values[best]), floor, 1e-8)
        if values[i] <= limit:
            start = None
            best = i if values[i] < values[best] else best
            continue
        start = i if start is None else start
        if i - start + 1 >= need + window // 2:
            end = i
            while end + 1 < len(values) and values[end + 1] > limit:
                end += 1
            return Episode("rise", series, best, start, end)
    return None


def find_oscillation(series: list[tuple[Point, float]], ctx: Context) -> Episode | None:
    """A stretch at or near the peak lr where the loss swings up and down without falling."""
    if ctx.peak_lr is None:
        return None
    near = [p.lr is not None and math.isfinite(p.lr) and ctx.near_peak(p.lr)
            for p, _ in series]
    start, end, i = 0, -1, 0
    while i < len(near):
        j = i
        while j < len(near) and near[j]:
            j += 1
        if j - i > end - start + 1:
            start, end = i, j - 1
        i = j + 1
    if end - start + 1 < 6:
        return None
    values = _smooth([v for _, v in series[start:end + 1]])
    diffs = [b - a for a, b in zip(values, values[1:])]
    flips = sum(1 for a, b in zip(diffs, diffs[1:]) if a * b < 0)
    swing = statistics.fmean(abs(d) for d in diffs) / abs(statistics.fmean(values) or 1.0)
    third = len(values) // 3
    improving = min(values[-third:]) < 0.97 * min(values[:third])
    if flips < 0.6 * (len(diffs) - 1) or swing < OSCILLATION_SWING or improving:
        return None
    best = start + min(range(len(values)), key=values.__getitem__)
    return Episode("oscillation", series, best, start, end)


def episode_finding(episode: Episode, ctx: Context) -> Finding:
    best_point, best_value = episode.series[episode.best]
    peak_point, peak_value = max(episode.stretch, key=lambda item: item[1])
    start_point = episode.stretch[0][0]
    lr = episode.lr
    fraction = ctx.lr_fraction(lr)
    near = ctx.near_peak(lr)
    base = ctx.base_lr(start_point) or lr
    evidence: dict[str, Any] = {
        "kind": episode.kind, "best_epoch": best_point.epoch, "best_train_loss": best_value,
        "start_epoch": start_point.epoch, "end_epoch": episode.stretch[-1][0].epoch,
        "peak_epoch": peak_point.epoch, "peak_train_loss": peak_value,
        "rise": peak_value / best_value - 1 if best_value > 0 else None,
        "records": len(episode.stretch), "lr": lr, "lr_peak": ctx.peak_lr,
        "lr_fraction_of_peak": fraction,
        "suggested_learning_rate": base / 3 if base else None}
    grads = [p.grad_norm for p, _ in [episode.series[episode.best], *episode.stretch]
             if p.grad_norm is not None and math.isfinite(p.grad_norm)]
    if len(grads) >= 2:
        evidence["grad_norm_from"], evidence["grad_norm_to"] = grads[0], grads[-1]
    if episode.kind == "oscillation":
        low = min(v for _, v in episode.stretch)
        seen = (f"Training loss oscillated between {low:.3g} and {peak_value:.3g} over "
                f"{len(episode.stretch)} records (epochs {ep(start_point)} to "
                f"{ep(episode.stretch[-1][0])}) without improving")
    else:
        seen = (f"Training loss rose from {best_value:.3g} at epoch {ep(best_point)} to "
                f"{peak_value:.3g} at epoch {ep(peak_point)} "
                f"(+{100 * (evidence['rise'] or 0):.0f}%), staying above its best for "
                f"{len(episode.stretch)} records from epoch {ep(start_point)}")
    if len(grads) >= 2 and grads[-1] > 1.5 * grads[0]:
        seen += f" (the gradient norm grew from {grads[0]:.3g} to {grads[-1]:.3g})"
    suggest = ctx.terms.lower_lr(base)
    if not near:
        if lr is not None and fraction is not None:
            at = (f"; the learning rate was {sci(lr)} ({fraction:.0%} of its peak). The loss "
                  f"climbs although the learning rate is not at its peak: look for what "
                  f"changed there (data, augmentation, a recovery change, label smoothing) "
                  f"before blaming the step size.")
        else:
            at = (". The log has no learning rate, so whether the step size was at its peak "
                  "cannot be told: the lr_too_high check was skipped. A loss that climbs for "
                  "this long is a too-high learning rate or a change in the data or the "
                  "objective.")
        message = seen + at
        fix = (f"roll back to epoch {best_point.epoch:g} (loss {best_value:.3g}) and check what "
               f"changed at epoch {ep(start_point)}; if nothing did, {suggest}.")
        return finding(FindingCode.LOSS_INCREASE, Severity.WARNING, message, evidence, fix)
    message = (f"{seen}, while the learning rate was at or near its peak ({sci(lr)}, "
               f"{fraction:.0%} of {sci(ctx.peak_lr)}). A loss that climbs or bounces at the "
               f"peak learning rate means the steps are too large for this model and batch "
               f"size: the optimizer overshoots, and left alone this ends in a divergence.")
    fix = f"{suggest} and resume from epoch {best_point.epoch:g} (loss {best_value:.3g})."
    likelihood = None
    if ctx.schedule_bug in ("flat_after_warmup", "too_high"):
        message += (" The lr_schedule_mismatch finding explains why the learning rate stayed "
                    "this high, so it is the likelier cause.")
        fix = f"fix the learning-rate schedule first; if the loss still rises at the peak, {fix}"
        likelihood = EXPLAINED_LR_TOO_HIGH
    return finding(FindingCode.LR_TOO_HIGH, Severity.ERROR, message, evidence, fix, likelihood)


def check_above_chance(ctx: Context, cfg: DetectorConfig) -> Finding | None:
    """A loss far above that of a model that knows nothing, at a high learning rate.

    The rule is the supervisor's (`DetectorConfig.reference_loss`, ln K for K classes,
    plus `max_loss_increase`): a run that stopped at once has too few epochs for a rising
    trend, but no sane update makes a model worse than a uniform guess. Needs the number of
    classes (our runs, or `--classes`) and a logged learning rate.
    """
    if cfg.reference_loss is None:
        return None
    chance, limit = cfg.reference_loss, cfg.reference_loss + cfg.max_loss_increase
    for point in ctx.points:
        loss = point.val_loss if point.val_loss is not None else point.train_loss
        if loss is None or not math.isfinite(loss) or loss <= limit:
            continue
        if not ctx.near_peak(point.lr):
            continue
        fraction = ctx.lr_fraction(point.lr) or 0.0
        base = ctx.base_lr(point) or point.lr
        which = "validation" if point.val_loss is not None else "training"
        message = (f"At {at(point)} the {which} loss was {loss:.4g}, {loss / chance:.1f} "
                   f"times the {chance:.3g} of a model that knows nothing (a uniform guess "
                   f"over {ctx.classes} classes), while the learning rate was "
                   f"{sci(point.lr)} ({fraction:.0%} of its peak). Updates this large throw "
                   f"away what the model had: the learning rate is too high for this model "
                   f"and batch size.")
        fix = f"{ctx.terms.lower_lr(base)}, or lower, and keep a warmup of at least one epoch."
        evidence = {"epoch": point.epoch, "loss": loss, "chance_loss": chance,
                    "threshold": limit, "lr": point.lr, "lr_fraction_of_peak": fraction,
                    "suggested_learning_rate": base / 3 if base else None}
        return finding(FindingCode.LR_TOO_HIGH, Severity.ERROR, message, evidence, fix)
    return None
