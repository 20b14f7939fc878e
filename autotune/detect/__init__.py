"""Detectors: pure functions of a run's metrics that say whether, and why, it diverged.

`check_step` (per optimizer step: non-finite values, loss spikes, gradient explosions),
`check_epoch` (per epoch: non-finite, loss increase, collapse, overfitting), with the
thresholds of `DetectorConfig`. Each returns a `Verdict` with a `Reason`. No I/O, no state;
what to do about a verdict is `autotune.recovery`'s business.
"""

from autotune.detect.collapse import at_collapse_level, check_collapse
from autotune.detect.epochs import check_epoch
from autotune.detect.steps import check_nonfinite, check_step
from autotune.detect.thresholds import DetectorConfig, detector_config
from autotune.detect.trend import Flat, Trend, curve_noise, flat_start, trend
from autotune.detect.verdict import OK, Reason, Verdict

__all__ = [
    "OK",
    "DetectorConfig",
    "Flat",
    "Reason",
    "Trend",
    "Verdict",
    "at_collapse_level",
    "check_collapse",
    "check_epoch",
    "check_nonfinite",
    "check_step",
    "curve_noise",
    "detector_config",
    "flat_start",
    "trend",
]
