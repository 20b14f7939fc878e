"""A loss judged against its own recent trend: level, slope, and the noise around them.

A training loss that falls fast has a running mean well above where it is now, so a jump
judged against a flat mean (`check_step`'s spike rule) can hide under the mean of the
steps before it. Here each value is judged against a straight line fitted by least
squares through the `window` finite values before it: the line's value at this record is
the level the trend predicts (kept within the window's range, so that a steep fall is not
extrapolated below what was seen), and the median absolute residual around the line,
scaled to a standard deviation, is the noise (robust to an earlier spike in the window).
A spike is a value above both the level + `sigmas` x the noise and `ratio` x the level:
the thresholds of `DetectorConfig` (`spike_window`, `spike_min_steps`, `spike_sigmas`,
`spike_ratio`). Vectorised (numpy), linear in the values; pure.

`flat_start` judges the other failure a trend shows: a loss that never fell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from autotune.detect.thresholds import DetectorConfig

__all__ = ["Flat", "Trend", "curve_noise", "flat_start", "trend"]

_MAD_TO_STD = 1.4826  # the median absolute deviation of a Gaussian is 0.6745 std


@dataclass(frozen=True)
class Trend:
    """Per value: the level its recent trend predicts, the slope, the noise, and whether it
    is a spike above that trend (False where too few values came before it)."""

    level: np.ndarray
    slope: np.ndarray  # per record, of the log of the loss where positive (a rate)
    noise: np.ndarray  # in the same space as the slope
    mean: np.ndarray  # the flat running mean of the same window, for comparison
    count: np.ndarray  # finite values in the window
    spike: np.ndarray


def trend(values: Sequence[float] | np.ndarray, cfg: DetectorConfig) -> Trend:
    """The trend judgement of every value of `values` against the ones before it."""
    y = np.asarray(values, dtype=float)
    n, w = len(y), cfg.spike_window
    level, slope, noise, mean, upper = (np.full(n, np.nan) for _ in range(5))
    arrays = (level, slope, noise, mean, upper)
    count = np.zeros(n, dtype=np.int64)

    def fill(at: np.ndarray | int, windows: np.ndarray) -> None:
        for target, got in zip(arrays, _fit(windows, cfg.spike_sigmas)):
            target[np.atleast_1d(at)] = got

    # The first `w` values have fewer before them: one short window each.
    for i in range(min(n, w)):
        before = y[:i][np.isfinite(y[:i])]
        count[i] = len(before)
        if len(before) >= 2:
            fill(i, before[None, :])
    if n > w:
        windows = sliding_window_view(y[:-1], w)  # windows[j] is the w values before j + w
        finite = np.isfinite(windows).all(axis=1)
        count[w:] = np.isfinite(windows).sum(axis=1)
        full = np.flatnonzero(finite)
        if len(full):
            fill(w + full, windows[full])
        for j in np.flatnonzero(~finite):  # windows with a gap: fit what is there
            before = windows[j][np.isfinite(windows[j])]
            if len(before) >= 2:
                fill(int(w + j), before[None, :])
    threshold = np.maximum(upper, cfg.spike_ratio * level)
    with np.errstate(invalid="ignore"):
        spike = (count >= cfg.spike_min_steps) & np.isfinite(y) & (level > 0) & (y > threshold)
    return Trend(level, slope, noise, mean, count, spike)


def _fit(windows: np.ndarray, sigmas: float
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A least-squares line through each row, on the log of the values where they are all
    positive (a loss falls and wobbles by a fraction of itself), else on the values.

    Returns per row: the line's value one step past the row (clipped to the row's range),
    its slope (of the log: a rate, or of the value), the robust noise of the residuals (in
    the same space), the row's mean, and the level + `sigmas` x noise back in values.
    """
    positive = np.asarray((windows > 0).all(axis=1))
    space = np.where(positive[:, None], np.log(np.where(windows > 0, windows, 1.0)), windows)
    w = windows.shape[1]
    x = np.arange(w, dtype=float) - (w - 1) / 2.0
    centre = space.mean(axis=1)
    slope = space @ x / float(x @ x)
    predicted = centre + slope * ((w + 1) / 2.0)
    residual = np.abs(space - (centre[:, None] + slope[:, None] * x[None, :]))
    noise = _MAD_TO_STD * np.median(residual, axis=1)
    with np.errstate(over="ignore"):
        level = np.where(positive, np.exp(predicted), predicted)
        upper = np.where(positive, np.exp(predicted + sigmas * noise), predicted + sigmas * noise)
    low, high = windows.min(axis=1), windows.max(axis=1)
    clipped = np.clip(level, low, high)
    upper = upper + (clipped - level) * np.where(positive, np.exp(sigmas * noise), 1.0)
    return clipped, slope, noise, windows.mean(axis=1), upper


@dataclass(frozen=True)
class Flat:
    """Whether a loss never fell: its drop from the first records to the last, relative to
    the first, and against the noise of the curve."""

    flat: bool
    start: float  # median of the first records
    end: float  # median of the last records
    drop: float  # (start - end) / |start|
    noise: float  # the standard deviation of the record-to-record noise
    records: int
    fell: bool = False  # it fell by more than both (it learned)


def flat_start(values: Sequence[float], cfg: DetectorConfig) -> Flat:
    """Flat from the start: over at least `flat_min_records` finite values, the median of
    the last fifth is within `flat_max_drop` (relative) of the median of the first fifth,
    or within `noise_sigmas` x the noise of those medians (a run that learned falls by
    more than both; one that rose is a rise, not flat)."""
    finite = [v for v in values if math.isfinite(v)]
    n = len(finite)
    if n < cfg.flat_min_records:
        return Flat(False, math.nan, math.nan, math.nan, math.nan, n, False)
    part = max(n // 5, 2)
    start, end = float(np.median(finite[:part])), float(np.median(finite[-part:]))
    drop = (start - end) / abs(start) if start != 0 else 0.0
    noise = curve_noise(finite)
    beyond = abs(start - end) > cfg.noise_sigmas * noise / math.sqrt(part)
    moved = abs(drop) > cfg.flat_max_drop and beyond  # fell (learned) or rose (another finding)
    return Flat(not moved, start, end, drop, noise, n, moved and drop > 0)


def curve_noise(values: Sequence[float]) -> float:
    """The standard deviation of a curve's record-to-record noise, from the curve itself.

    The second differences of a curve (x[i+1] - 2 x[i] + x[i-1]) remove its trend where it
    is locally straight and leave the noise: for independent noise of std s their std is
    sqrt(6) s. Their median absolute value, scaled to a std, is robust to a few jumps (a
    spike, a recovery) and to a curve that alternates up and down. 0.0 for fewer than three
    finite values.
    """
    y = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(y) < 3:
        return 0.0
    second = np.abs(y[2:] - 2 * y[1:-1] + y[:-2])
    return float(_MAD_TO_STD * np.median(second) / math.sqrt(6.0))
