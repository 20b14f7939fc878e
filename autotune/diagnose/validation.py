"""The validation checks: overfitting, a validation loss that rises with the training loss,
and (ARC runs) a collapse onto the colour-frequency level.

The rules are the supervisor's epoch check (`autotune.detect.check_epoch`) and collapse
check (`check_collapse`), applied at each validation record in turn as the supervisor
would have at the end of each epoch; the first verdict is the finding, and its evidence
describes the whole stretch from the best validation loss to the end.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.detect import OK, DetectorConfig, Reason, Verdict, check_collapse, check_epoch
from autotune.diagnose.epoch_records import EpochRecords
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.prose import sci
from autotune.diagnose.readers.columns import number
from autotune.diagnose.thresholds import MILD_OVERFITTING, NOISE_RECORDS, NOISE_SIGMAS, noise
from autotune.diagnose.timeline import Context, Point, ep

__all__ = ["check_collapse_points", "check_val", "val_noise", "val_series"]


def val_series(points: Sequence[Point]) -> list[tuple[Point, float, float]]:
    """(point, validation loss, training loss) at each validation record.

    The training loss beside a validation record is the mean of those logged since the
    previous one (the epoch's mean when the log has a training loss per step), else the
    last one logged before it (else the first logged after it).
    """
    out: list[tuple[Point, float, float]] = []
    since: list[float] = []
    # Before the first training loss is logged (an evaluation every epoch, a training
    # loss every few steps), the first one logged stands for it.
    last = next((p.train_loss for p in points
                 if p.train_loss is not None and math.isfinite(p.train_loss)), math.nan)
    for p in points:
        if p.train_loss is not None and math.isfinite(p.train_loss):
            since.append(p.train_loss)
            last = p.train_loss
        if p.val_loss is None:
            continue
        out.append((p, p.val_loss, statistics.fmean(since) if since else last))
        since = []
    return out


def check_val(points: Sequence[Point], cfg: DetectorConfig, ctx: Context,
              told: set[float], val_size: int | None = None) -> tuple[list[Finding], bool]:
    """The epoch verdicts along one line of training, as findings.

    Each validation record is judged as the supervisor would have at the end of its epoch.
    Before a verdict becomes a finding, diagnose uses what the supervisor could not know
    then, the rest of the log:

    - a rise past the divergence threshold that the validation loss later comes back
      below (a new best) was a transient: a model that overfits does not recover on its
      own while it goes on fitting its training set, an optimizer that overshot does. It is
      an instability (`lr_too_high` at the peak learning rate), and the judging goes on
      after the recovery;
    - an early overfitting verdict (a rise below that threshold) whose rise is within
      NOISE_SIGMAS times the noise of this validation curve (measured from the curve) is
      noise, not overfitting.

    The first verdict that stands (overfitting or a rise of both losses) ends the judging.

    A rise past the threshold that stays within the noise of the validation loss (see
    `_noise_allowance`), and comes back or does not last `overfit_patience` records, is
    noise too: a small validation set makes a noisy curve
    (`val_noise`, measured on the NOISE_RECORDS records before the one judged, as the
    supervisor would have known it).

    Args:
        told: global epochs an event of the run already tells about (skipped).
        val_size: examples in the validation set, where the log tells it.

    Returns:
        (the findings, whether the validation loss was judged at all: two or more finite
        validation records).
    """
    series = val_series(points)
    if len(series) < 2:
        return [], False
    vals = [val for _, val, _ in series]
    floor = NOISE_SIGMAS * val_noise(vals, val_size)
    found: list[Finding] = []
    records = EpochRecords(cfg)
    resume = -1
    for i, (p, val, train) in enumerate(series):
        records.append({"epoch": p.epoch, "train_loss": train, "val_loss": val})
        verdict = OK if i <= resume else check_epoch(records.records, cfg)
        records.settle()
        if not verdict or p.global_epoch in told:
            continue
        if verdict.reason not in (Reason.OVERFITTING, Reason.LOSS_INCREASE):
            continue
        best = verdict.evidence.get("best_val_loss")
        back = None if best is None else next(
            (j for j in range(i + 1, len(series)) if series[j][1] < best), None)
        if best is not None and val - best <= _noise_allowance(
                vals[:i][-NOISE_RECORDS:], val_size) and (
                back is not None or not _sustained(vals, i, verdict, cfg)):
            continue  # a rise within the noise of this validation curve (or set)
        if back is not None:
            found.append(_transient(series, i, back, verdict, points, ctx))
            resume = back
            continue
        if best is None and verdict.evidence.get("val_rise", 0.0) <= floor:
            continue  # an early verdict on a rise within the curve's own noise
        if verdict.reason is Reason.OVERFITTING or _falling_trend(series, verdict):
            found.append(_overfitting(series, verdict, ctx, cfg))
        else:
            found.append(_val_increase(series, verdict))
        break
    return found, True


def _sustained(vals: Sequence[float], i: int, verdict: Verdict, cfg: DetectorConfig) -> bool:
    """The validation loss stayed past the verdict's threshold for `overfit_patience`
    records after record i: a rise that lasts is not a wiggle, however noisy the curve."""
    after = vals[i + 1:i + 1 + cfg.overfit_patience]
    limit = verdict.evidence.get("threshold", math.inf)
    return len(after) == cfg.overfit_patience and all(v > limit for v in after)


def _noise_allowance(before: Sequence[float], val_size: int | None) -> float:
    """How far above its best a noisy validation curve goes by chance: NOISE_SIGMAS x the
    noise of a difference of two values (sqrt 2), plus the depth of the best below the
    curve's level, the least of n noisy values lying about sqrt(2 ln n) noise below it."""
    sigma = val_noise(before, val_size)
    depth = math.sqrt(2.0 * math.log(max(len(before), 2)))
    return sigma * (NOISE_SIGMAS * math.sqrt(2.0) + depth)


def val_noise(vals: Sequence[float], val_size: int | None) -> float:
    """The noise of a validation curve: measured from the curve, and at least the sampling
    error of a mean loss over `val_size` examples (a per-example cross-entropy spreads about
    as widely as its mean, so the mean of N is uncertain by about loss / sqrt(N))."""
    measured = noise(vals)
    finite = [v for v in vals if math.isfinite(v)]
    if not val_size or not finite:
        return measured
    return max(measured, statistics.median(finite) / math.sqrt(val_size))


def _transient(series: Sequence[tuple[Point, float, float]], i: int, back: int,
               verdict: Verdict, points: Sequence[Point], ctx: Context) -> Finding:
    """A validation rise past the threshold that came back below its best: instability."""
    best, best_epoch = verdict.evidence["best_val_loss"], verdict.evidence["best_epoch"]
    top = max(range(i, back), key=lambda k: series[k][1])
    peak_point, peak = series[top][0], series[top][1]
    back_point = series[back][0]
    first = next(q for q in points if q.epoch == best_epoch) if any(
        q.epoch == best_epoch for q in points) else series[0][0]
    lrs = [q.lr for q in points if first.index <= q.index <= peak_point.index
           and q.lr is not None and math.isfinite(q.lr)]
    lr = max(lrs) if lrs else None
    near = ctx.near_peak(lr)
    message = (f"The validation loss jumped from {best:.3g} at epoch {best_epoch:g} to "
               f"{peak:.3g} at epoch {ep(peak_point)} ({peak / best:.1f}x), and was back "
               f"below {best:.3g} by epoch {ep(back_point)} ({series[back][1]:.3g}). A model "
               f"that overfits does not recover on its own while it goes on fitting its "
               f"training data; an optimizer that overshot does, so this was instability, "
               f"not overfitting")
    evidence = {"best_epoch": best_epoch, "best_val_loss": best,
                "peak_epoch": peak_point.epoch, "peak_val_loss": peak,
                "recovered_epoch": back_point.epoch, "recovered_val_loss": series[back][1],
                "lr": lr, "lr_fraction_of_peak": ctx.lr_fraction(lr),
                "detector": verdict.evidence}
    base = ctx.base_lr(peak_point) or lr
    if near and lr is not None:
        message += (f", while the learning rate was at or near its peak ({sci(lr)}, "
                    f"{ctx.lr_fraction(lr):.0%} of {sci(ctx.peak_lr)}): the steps are too "
                    f"large for this model and batch size.")
        fix = (f"{ctx.terms.lower_lr(base)} (or warm up over the first epochs) and "
               f"{ctx.terms.clip}.")
        evidence["suggested_learning_rate"] = base / 3 if base else None
        return finding(FindingCode.LR_TOO_HIGH, Severity.ERROR, message, evidence, fix)
    if lr is None:
        message += (". The log has no learning rate, so whether it was at its peak cannot "
                    "be told: the lr_too_high check was skipped.")
    else:
        message += (f"; the learning rate was {sci(lr)}, not at its peak: look for what "
                    f"changed at epoch {ep(peak_point)} (data, a bad batch) as well.")
    fix = ("lower the learning rate (a third is the usual step) or lengthen the warmup, and "
           f"{ctx.terms.clip}, so that one epoch cannot undo what the model had learned.")
    return finding(FindingCode.LOSS_INCREASE, Severity.WARNING, message, evidence, fix)


def _falling_trend(series: Sequence[tuple[Point, float, float]], verdict: Verdict) -> bool:
    """The training loss fell since the best validation epoch, as a trend.

    The supervisor calls a rise overfitting only when the training loss fell at every
    epoch since the best; a log's per-epoch training loss (a mean over noisy steps, or
    one logged step) rarely does, so diagnose reads the trend: lower at the end than at
    the best validation epoch, and below the validation loss (a generalisation gap).
    """
    best = verdict.evidence.get("best_epoch")
    at_best = [train for p, _, train in series if p.epoch == best]
    last_train, last_val = series[-1][2], series[-1][1]
    return bool(at_best) and math.isfinite(last_train) and last_train < at_best[0] \
        and last_train < last_val


def _stretch(series: Sequence[tuple[Point, float, float]]) -> dict[str, Any]:
    b = min(range(len(series)), key=lambda i: series[i][1])
    best, last = series[b], series[-1]
    return {"best_epoch": best[0].epoch, "best_val_loss": best[1],
            "last_epoch": last[0].epoch, "last_val_loss": last[1],
            "records_rising": len(series) - 1 - b, "train_loss_at_best": best[2],
            "train_loss_at_last": last[2], "_best": best[0], "_last": last[0]}


def _rise(series: Sequence[tuple[Point, float, float]], verdict: Verdict, *,
          train_kept_falling: bool, meaning: str) -> tuple[str, dict[str, Any], Point]:
    """The message of a validation loss that rose from its best, its evidence and the best
    point: the one wording the overfitting and the instability findings share."""
    evidence = _stretch(series)
    best, last = evidence.pop("_best"), evidence.pop("_last")
    evidence["detector"] = verdict.evidence
    train = (f" ({evidence['records_rising']} records) while the training loss kept falling"
             if train_kept_falling else " while the training loss did not keep falling")
    message = (f"The validation loss rose from {evidence['best_val_loss']:.3g} at epoch "
               f"{ep(best)} to {evidence['last_val_loss']:.3g} at epoch {ep(last)}{train} "
               f"({evidence['train_loss_at_best']:.3g} to {evidence['train_loss_at_last']:.3g}): "
               f"{meaning}")
    return message, evidence, best


def _overfitting(series: Sequence[tuple[Point, float, float]], verdict: Verdict,
                 ctx: Context, cfg: DetectorConfig) -> Finding:
    message, evidence, best = _rise(
        series, verdict, train_kept_falling=True,
        meaning=f"{ctx.terms.memorising}, which is overfitting, not an unstable optimizer; "
                f"lowering the learning rate will not cure it.")
    fix = ctx.terms.overfit_fix(best.epoch, evidence["best_val_loss"])
    # Below the divergence threshold it is the supervisor's early warning (MILD_OVERFITTING).
    mild = evidence["last_val_loss"] - evidence["best_val_loss"] <= cfg.max_loss_increase
    return finding(FindingCode.OVERFITTING, Severity.WARNING, message, evidence, fix,
                   MILD_OVERFITTING if mild else None)


def _val_increase(series: Sequence[tuple[Point, float, float]], verdict: Verdict) -> Finding:
    message, evidence, best = _rise(
        series, verdict, train_kept_falling=False,
        meaning="the model is getting worse on both, which points at instability rather than "
                "overfitting.")
    fix = (f"roll back to epoch {best.epoch:g} (val_loss {evidence['best_val_loss']:.3g}) and "
           f"lower the learning rate to 1/3, or lengthen the warmup.")
    return finding(FindingCode.LOSS_INCREASE, Severity.WARNING, message, evidence, fix)


def check_collapse_points(history: Sequence[Mapping[str, Any]],
                          segments: Sequence[list[Point]], cfg: DetectorConfig,
                          ctx: Context) -> Finding | None:
    """The validation loss sat at the level of predicting the colour frequencies only.

    Needs that level in the records (`marginal_loss`, which our ARC runs log); the rule
    is the detector's `check_collapse`, applied along each line of training.
    """
    for segment in segments:
        records: list[dict[str, float]] = []
        for point in segment:
            marginal = number(history[point.index].get("marginal_loss"))
            val = point.val_loss if point.val_loss is not None else math.nan
            train = point.train_loss if point.train_loss is not None else math.nan
            records.append({"epoch": point.epoch, "val_loss": val, "train_loss": train})
            if marginal is None:
                continue
            level = number(history[point.index].get("train_marginal_loss"))
            verdict = check_collapse(records, DetectorConfig(
                **{**_thresholds(cfg), "marginal_loss": marginal,
                   "train_marginal_loss": level}))
            if verdict:
                return _collapse_finding(verdict, point, ctx.base_lr(point) or point.lr,
                                         ctx)
    return None


def _thresholds(cfg: DetectorConfig) -> dict[str, Any]:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def _collapse_finding(verdict: Verdict, point: Point, lr: float | None, ctx: Context
                      ) -> Finding:
    message = (f"{verdict.message} The peak learning rate was {sci(lr)}: too high a rate "
               f"drives the model onto that trivial answer (mostly the background colour) "
               f"and keeps it there, so the loss neither rises nor falls.")
    fix = ("train again from the start (a collapsed model does not come back when the rate "
           "is lowered) with learning_rate " + (f"{sci(lr / 3, 2)} (1/3 of {sci(lr, 2)})"
                                                 if lr else "x 1/3") +
           f" and {ctx.terms.clip}; if it collapses again, a tenth of that.")
    evidence = {**verdict.evidence, "epoch": point.epoch, "peak_lr": lr,
                "suggested_learning_rate": lr / 3 if lr else None}
    return finding(FindingCode.COLLAPSED, Severity.ERROR, message, evidence, fix)
