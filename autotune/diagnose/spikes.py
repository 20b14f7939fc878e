"""Loss spikes: a sudden jump of the training loss against its recent trend.

The rule is `autotune.detect.trend` (the level and slope of the records before, with the
spike thresholds of `DetectorConfig`), so a jump is seen while the loss falls fast. A log whose
training loss is one batch's loss every step or every few steps is judged with the
detector's own thresholds. A log of one record per epoch (or per logging interval) is not:
see `record_config`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autotune.detect import DetectorConfig, trend
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
    mean: float  # the flat running mean of the window, for comparison
    window: int
    after: float | None  # the next record's loss
    level: float = math.nan  # what the recent trend (level and slope) predicted
    noise: float = math.nan  # the noise around that trend

    @property
    def ratio(self) -> float:
        return self.value / self.mean

    @property
    def over_trend(self) -> float:
        return self.value / self.level if self.level > 0 else math.inf


def find_spikes(series: Sequence[tuple[Point, float]], cfg: DetectorConfig) -> list[Spike]:
    """Every record of `series` (finite training losses) above its recent trend
    (`autotune.detect.trend`: the level and slope of the records before it)."""
    values = np.asarray([v for _, v in series], dtype=float)
    judged = trend(values, cfg)
    spikes = []
    for i in np.flatnonzero(judged.spike).tolist():
        mean = float(judged.mean[i])
        if not mean > 0:
            continue
        after = float(values[i + 1]) if i + 1 < len(values) else None
        spikes.append(Spike(series[i][0], float(values[i]), mean, int(judged.count[i]), after,
                            float(judged.level[i]), float(judged.noise[i])))
    return spikes


def spike_finding(spikes: Sequence[Spike], ctx: Context) -> Finding:
    top = max(spikes, key=lambda s: s.ratio)
    p = top.point
    where = at(p)
    fell_back = top.after is not None and top.after < 1.2 * top.mean
    first = spikes[0].point
    message = (f"Training loss jumped to {top.value:.3g} at {where}, {top.over_trend:.1f}x the "
               f"{top.level:.3g} its recent trend predicted ({top.ratio:.1f}x its running mean "
               f"of {top.mean:.3g} over the previous {top.window} records)")
    if top.after is not None:
        message += (f", and fell back to {top.after:.3g} at the next record" if fell_back
                    else f", and stayed up ({top.after:.3g}) at the next record")
    if len(spikes) > 1:
        message += f"; {len(spikes)} such spikes in all, the first at {at(first)}"
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
                "trend_level": top.level, "trend_noise": top.noise,
                "ratio_to_trend": top.over_trend,
                "epochs": [s.point.epoch for s in spikes[:10]],
                "began_epoch": first.epoch, "began_step": first.step}
    return finding(FindingCode.LOSS_SPIKE, Severity.WARNING, message, evidence, fix + ".")
