"""Loss spikes: a sudden jump of the training loss against its recent running mean.

The rule is the supervisor's step check (`autotune.detect.check_step`). A log whose
training loss is one batch's loss every step or every few steps is judged with the
detector's own thresholds. A log of one record per epoch (or per logging interval) is not:
see `record_config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from autotune.detect import DetectorConfig, Reason, check_step
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.prose import sci
from autotune.diagnose.thresholds import RECORD_DILUTION, RECORD_MIN, RECORD_WINDOW
from autotune.diagnose.timeline import Context, Point, at

__all__ = ["Spike", "find_spikes", "record_config", "spike_finding"]



def record_config(cfg: DetectorConfig) -> DetectorConfig:
    """The detector's spike thresholds for records that each average many steps.

    One bad batch moves the mean over an epoch by a fraction of its own jump, so the
    detector's ratio above the running mean (`spike_ratio`, 3x for one step) is diluted:
    1 + (3 - 1) x RECORD_DILUTION = 1.5x for a record. Averaging shrinks the noise as much
    as the jump, so `spike_sigmas` stays as it is. The window is records, not steps.
    """
    return dataclasses.replace(cfg, spike_window=RECORD_WINDOW, spike_min_steps=RECORD_MIN,
                               spike_ratio=1.0 + (cfg.spike_ratio - 1.0) * RECORD_DILUTION)


@dataclass(frozen=True)
class Spike:
    point: Point
    value: float
    mean: float
    window: int
    after: float | None  # the next record's loss

    @property
    def ratio(self) -> float:
        return self.value / self.mean


def find_spikes(series: Sequence[tuple[Point, float]], cfg: DetectorConfig) -> list[Spike]:
    """Every record of `series` (finite training losses) that `check_step` calls a spike."""
    values = [v for _, v in series]
    spikes = []
    for i in range(len(values)):
        verdict = check_step(values[:i + 1], [], i, cfg)
        if not verdict or verdict.reason is not Reason.LOSS_SPIKE:
            continue
        mean = verdict.evidence["mean"]
        if mean <= 0:
            continue
        after = values[i + 1] if i + 1 < len(values) else None
        spikes.append(Spike(series[i][0], values[i], mean, int(verdict.evidence["window"]),
                            after))
    return spikes


def spike_finding(spikes: Sequence[Spike], ctx: Context) -> Finding:
    top = max(spikes, key=lambda s: s.ratio)
    p = top.point
    where = at(p)
    fell_back = top.after is not None and top.after < 1.2 * top.mean
    message = (f"Training loss jumped to {top.value:.3g} at {where}, {top.ratio:.1f}x its "
               f"running mean of {top.mean:.3g} over the previous {top.window} records")
    if top.after is not None:
        message += (f", and fell back to {top.after:.3g} at the next record" if fell_back
                    else f", and stayed up ({top.after:.3g}) at the next record")
    if len(spikes) > 1:
        message += f"; {len(spikes)} such spikes in all"
    message += (". A jump against the recent trend is one bad batch or one oversized step; "
                "it can knock the weights into a worse region or, repeated, into divergence.")
    fix = (f"{ctx.terms.skip_batches(where)} and {ctx.terms.tighten_clip} so one batch cannot "
           f"move the weights that far")
    base = ctx.base_lr(p)
    if (len(spikes) > 1 or not fell_back) and ctx.near_peak(p.lr) and base:
        fix += f"; spikes that recur at the peak call for learning_rate {sci(base / 3, 2)}"
    evidence = {"epoch": p.epoch, "step": p.step, "value": top.value,
                "running_mean": top.mean, "ratio": top.ratio, "window": top.window,
                "next_value": top.after, "lr": p.lr, "count": len(spikes),
                "epochs": [s.point.epoch for s in spikes[:10]]}
    return finding(FindingCode.LOSS_SPIKE, Severity.WARNING, message, evidence, fix + ".")
