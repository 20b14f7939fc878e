"""`diagnose`: root-cause findings for a metrics history, most likely cause first."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.detect import DetectorConfig
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding, ordered
from autotune.diagnose.intended import Intended
from autotune.diagnose.losses import (
    Episode,
    check_above_chance,
    check_nonfinite_points,
    check_smoothing,
    episode_finding,
    find_oscillation,
    find_rise,
)
from autotune.diagnose.progress import (
    check_at_chance,
    check_not_learning,
    check_stalled_at_peak,
)
from autotune.diagnose.prose import Terms
from autotune.diagnose.readers.rundir import ARC_METRIC_KEYS
from autotune.diagnose.recoveries import check_events, parse_events, told_epochs
from autotune.diagnose.schedule import check_schedule
from autotune.diagnose.spikes import Spike, find_spikes, record_config, spike_finding
from autotune.diagnose.thresholds import ASSUMED_MISMATCH, NOISE_SIGMAS
from autotune.diagnose.timeline import Context, Point, finite_prefix, intents, points, segments
from autotune.diagnose.validation import check_collapse_points, check_val, val_noise

__all__ = ["diagnose", "judging_config"]

# Findings that already explain a loss that never fell.
_EXPLAINS_FLAT = (FindingCode.COLLAPSED, FindingCode.NONFINITE_LOSS, FindingCode.NONFINITE_GRAD,
                  FindingCode.LR_SCHEDULE_MISMATCH)



def diagnose(history: Sequence[Mapping[str, Any]], intended: Intended | None,
             events: Sequence[Mapping[str, Any]] = (), steps_per_epoch: int | None = None,
             *, classes: int | None = None, arc: bool | None = None, per_step: bool = False,
             unit: str = "epoch", detector: DetectorConfig | None = None,
             pooled: bool = False, val_size: int | None = None) -> list[Finding]:
    """Root-cause findings for a metrics history, most likely cause first.

    Args:
        history: records in the order written, with `epoch` and `train_loss` (or
            `val_loss`), optionally `lr`, `val_loss`, `grad_norm`, `step`, `global_epoch`.
        intended: the schedule the run was meant to follow; None skips the schedule checks.
        events: our run's events.jsonl; each `changes` takes effect after its global_epoch.
        steps_per_epoch: when given with `step`, the applied lr is compared at
            step / steps_per_epoch exactly instead of trying the usual logging alignments.
        classes: output classes (the chance level ln K); default `intended.num_classes`.
        arc: an ARC run of ours (ARC advice); default: the records carry our ARC metrics.
        per_step: the training loss is logged per step (noisy; validation trumps it).
        unit: what `epoch` counts (`step` for a log without epochs).
        detector: the supervisor's thresholds for this run; default DetectorConfig's,
            read relative to the loss's scale for a log that is not ours (`judging_config`).
        pooled: each record pools several rows of a long log (`readers.pool`): a spike is
            judged as in records that average many steps.
        val_size: examples in the validation set, where known: a validation rise within
            its sampling error is noise.

    Returns:
        The findings; `healthy` (beside any info findings) when nothing is wrong.
    """
    pts = points(history, unit)
    if not pts:
        return [finding(FindingCode.NO_DATA, Severity.INFO,
                        "The history has no records: nothing to judge.", {"records": 0}, "")]
    if arc is None:
        arc = any(k in r for r in history for k in ARC_METRIC_KEYS)
    if classes is None and intended is not None:
        classes = intended.num_classes
    run_events = parse_events([e for e in events if isinstance(e, Mapping)])
    raw_events = [e for e in events if isinstance(e, Mapping)]
    its = intents(pts, intended, raw_events) if intended is not None else None
    lrs = [p.lr for p in pts if p.lr is not None and math.isfinite(p.lr) and p.lr > 0]
    mismatch = check_schedule(pts, its, steps_per_epoch) if its and lrs else None
    trusted = mismatch is not None and intended is not None and not intended.weak
    ctx = Context(pts, its, max(lrs) if lrs else None,
                  mismatch.evidence["pattern"] if trusted and mismatch else None,
                  Terms(arc), per_step, classes)
    if mismatch is not None and intended is not None:
        mismatch = _with_assumptions(mismatch, intended)
    cfg = judging_config(detector, pts, arc, classes)
    findings = [f for f in (mismatch, check_nonfinite_points(ctx), check_smoothing(ctx)) if f]
    lines = segments(pts, raw_events)
    findings += _check_losses(ctx, lines, cfg, told_epochs(run_events), pooled, val_size)
    findings += [f for f in (check_collapse_points(history, lines, cfg, ctx),) if f]
    if not arc and not any(f.code is FindingCode.COLLAPSED for f in findings):
        findings += [f for f in (check_at_chance(ctx, lines, cfg),) if f]
    if not any(f.code in (*_EXPLAINS_FLAT, FindingCode.LR_TOO_HIGH) for f in findings):
        findings += [f for f in (check_stalled_at_peak(ctx, lines, cfg),) if f]
    if not any(f.code in _EXPLAINS_FLAT for f in findings):
        findings += [f for f in (check_not_learning(ctx, lines, cfg),) if f]
    if not any(f.code is FindingCode.LR_TOO_HIGH for f in findings):
        findings += [f for f in (check_above_chance(ctx, cfg),) if f]
    findings += check_events(run_events, ctx)
    if all(f.severity is Severity.INFO for f in findings):
        findings.append(_healthy(ctx))
    return ordered(findings)


def judging_config(detector: DetectorConfig | None, pts: Sequence[Point], arc: bool,
                   classes: int | None) -> DetectorConfig:
    """The thresholds diagnose judges with: the supervisor's, on the loss's own scale.

    DetectorConfig's loss thresholds (`max_loss_increase`, `overfit_min_rise`) are absolute
    on the scale of ARC's cross-entropy (losses of order 1). A foreign loss can be 0.01 or
    100 (MSE, a sum over tokens), so for a log that is not one of our ARC runs they are read
    as fractions of its best validation (else training) loss.
    """
    # A log is judged whole: a bump during warmup that came back is reported (as such),
    # not waited for as a live run waits for its next epoch.
    cfg = dataclasses.replace(detector or DetectorConfig(), warmup_rise_patience=1,
                              reference_patience=1, warmup_grace=False)
    if classes is not None and cfg.reference_loss is None:
        cfg = dataclasses.replace(cfg, reference_loss=math.log(classes))
    if arc:
        return cfg
    losses = [v for p in pts for v in (p.val_loss,) if v is not None and math.isfinite(v)] or [
        v for p in pts for v in (p.train_loss,) if v is not None and math.isfinite(v)]
    scale = min((abs(v) for v in losses if v != 0), default=1.0)
    return dataclasses.replace(cfg, max_loss_increase=cfg.max_loss_increase * scale,
                               overfit_min_rise=cfg.overfit_min_rise * scale)


def _check_losses(ctx: Context, lines: Sequence[list[Point]], cfg: DetectorConfig,
                  told: set[float], pooled: bool = False, val_size: int | None = None
                  ) -> list[Finding]:
    found: list[Finding] = []
    spikes: list[Spike] = []
    spike_cfg = cfg if ctx.per_step and not pooled else record_config(cfg)
    # The reference check is the chance-level finding's; the epoch check here judges
    # the validation loss against its own best.
    val_cfg = dataclasses.replace(cfg, reference_loss=None, marginal_loss=None)
    for line in lines:
        pts, cut = finite_prefix(line)
        series = [(p, p.train_loss) for p in pts if p.train_loss is not None]
        episode = find_rise(series, 2 if cut else 3) or find_oscillation(series, ctx)
        vals, judged = check_val(pts, val_cfg, ctx, told, val_size)
        if episode is not None and ctx.per_step and judged and not _val_confirms(
                episode, pts, val_size):
            # A training loss logged per step is noisy; the validation loss, judged once
            # an epoch, trumps a rise or swing of that noise unless it rose with it.
            episode = None
        if episode is not None and episode.stretch[0][0].global_epoch not in told:
            found.append(episode_finding(episode, ctx))
        spikes += [s for s in find_spikes(series, spike_cfg) if s.point.global_epoch not in told]
        found += [v for v in vals if not (episode is not None
                                          and v.code is FindingCode.LOSS_INCREASE)]
    if spikes:
        found.append(spike_finding(spikes, ctx))
    seen: set[FindingCode] = set()
    first = []
    for f in found:
        if f.code not in seen:
            seen.add(f.code)
            first.append(f)
    return first


def _val_confirms(episode: Episode, pts: Sequence[Point], val_size: int | None) -> bool:
    """The validation loss rose with the training loss's episode, beyond its own noise:
    its highest from the episode's start to the first validation after its end, against
    the last one before the start, by more than NOISE_SIGMAS x sqrt(2) x its noise."""
    first, last = episode.stretch[0][0].index, episode.stretch[-1][0].index
    before = [p.val_loss for p in pts if p.index < first and p.val_loss is not None
              and math.isfinite(p.val_loss)]
    after_end = [p.index for p in pts if p.index > last and p.val_loss is not None]
    stop = after_end[0] if after_end else last
    during = [p.val_loss for p in pts if first <= p.index <= stop and p.val_loss is not None
              and math.isfinite(p.val_loss)]
    if not before or not during:
        return False
    rise = max(during) - before[-1]
    return rise > NOISE_SIGMAS * math.sqrt(2.0) * val_noise(before, val_size)


def _with_assumptions(found: Finding, intended: Intended) -> Finding:
    """A schedule finding that says what the flags left to assumption.

    With the planned epochs or the schedule only assumed (a diverged run's log often stops
    early), the mismatch is a warning ranked below what the losses show.
    """
    if not intended.assumed:
        return found
    assumed = {key: getattr(intended, key) for key in intended.assumed}
    weaker: dict[str, Any] = ({"severity": Severity.WARNING, "likelihood": ASSUMED_MISMATCH}
                              if intended.weak else {})
    said = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in assumed.items())
    return dataclasses.replace(
        found, message=f"{found.message} Not given as flags, so assumed: {said}.",
        evidence={**found.evidence, "assumed": dict(assumed)},
        fix=f"{found.fix} If the assumed {', '.join(assumed)} are wrong, pass them "
            f"(--epochs, --warmup-epochs, --schedule) and diagnose again.", **weaker)


def _healthy(ctx: Context) -> Finding:
    losses = [(p, p.train_loss) for p in ctx.points if p.train_loss is not None]
    vals = [(p, p.val_loss) for p in ctx.points if p.val_loss is not None]
    first, last = ctx.points[0], ctx.points[-1]
    unit = "steps" if first.unit == "step" else "epochs"
    message = (f"Nothing wrong found in {len(ctx.points)} records ({unit} {first.epoch:g} to "
               f"{last.epoch:g})")
    evidence: dict[str, Any] = {"records": len(ctx.points)}
    if losses:
        message += f": training loss went from {losses[0][1]:.3g} to {losses[-1][1]:.3g}"
        evidence["train_loss_first"], evidence["train_loss_last"] = losses[0][1], losses[-1][1]
    if vals:
        best_point, best = min(vals, key=lambda item: item[1])
        message += f", validation loss reached {best:.3g} at {unit[:-1]} {best_point.epoch:g}"
        evidence["best_val_loss"], evidence["best_epoch"] = best, best_point.epoch
    if ctx.intents is not None and ctx.has_lr:
        message += ", and the learning rate followed the intended schedule"
    return finding(FindingCode.HEALTHY, Severity.INFO, message + ".", evidence, "")


