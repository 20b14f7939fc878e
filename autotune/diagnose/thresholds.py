"""Diagnose's own thresholds, in one place.

Where a rule means the same as one of the supervisor's detectors, diagnose uses the
detector's threshold (`autotune.detect.DetectorConfig`: `max_loss_increase`,
`overfit_min_rise`, `overfit_patience`, the spike and gradient thresholds), read on the
loss's own scale for a foreign log (`judge.judging_config`). What is here has no detector
counterpart: the supervisor judges a run as it goes and one record at a time, diagnose
judges a whole log after the fact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autotune.detect import DetectorConfig, curve_noise

__all__ = ["ASSUMED_MISMATCH", "EXPLAINED_LR_TOO_HIGH", "MILD_OVERFITTING", "NEAR_PEAK",
           "NOISE_RECORDS", "NOISE_SIGMAS", "OSCILLATION_SWING", "RECORD_DILUTION", "RECORD_MIN",
           "RECORD_WINDOW", "RISE", "SMOOTH_MIN", "noise", "median_noise"]

RISE = 0.10
"""A training loss this far above its best (relative: a foreign loss has any scale), for
several records running, is a rise. The supervisor judges only the validation loss; many
logs carry only a training loss, so diagnose judges that too."""
OSCILLATION_SWING = 0.15
"""The mean change per record, relative to the loss, of an oscillation at the peak lr."""
NEAR_PEAK = 0.7
"""A learning rate at or above this fraction of the run's highest is "near the peak"."""
RECORD_WINDOW = 5
"""Records in the running mean of a record-level spike check (a log has tens of records,
not thousands of steps)."""
RECORD_MIN = 3
"""No record-level spike verdict before this many records."""
RECORD_DILUTION = 0.25
"""The share of one batch's jump left in the mean of a record (see `spikes.record_config`)."""
SMOOTH_MIN = 20
"""A series of at least this many records (per-step losses) is smoothed by a running median
before a rise is looked for, and its noise is measured from the log."""
NOISE_SIGMAS = DetectorConfig.noise_sigmas
"""A change smaller than this many times the noise of its own curve is noise, not a rise:
for Gaussian noise about 1 in 700 such changes would be chance. The noise is measured from
the log itself (`noise`), never assumed. The detectors' threshold (one source)."""
NOISE_RECORDS = 200
"""The noise a validation rise is judged against is measured on this many records before
it (bounded: linear time on a long log)."""
MILD_OVERFITTING = 0.45
"""The likelihood (report order) of an overfitting whose validation rise stayed below the
divergence threshold (`max_loss_increase`): the supervisor's early warning, not a diverged
run. It ranks below a loss spike (0.5) and an instability (0.6), which are defects to fix,
while a mild overfit is the usual end of a run that trained long enough."""
EXPLAINED_LR_TOO_HIGH = 0.6
"""lr_too_high's likelihood when a schedule bug explains the high learning rate."""
ASSUMED_MISMATCH = 0.55
"""A schedule mismatch against a schedule the flags did not fully give."""



def noise(values: Sequence[float]) -> float:
    """The standard deviation of a curve's record-to-record noise, from the curve itself
    (`autotune.detect.curve_noise`: the robust spread of its second differences)."""
    return curve_noise(values)


def median_noise(values: Sequence[float], window: int) -> float:
    """The noise left in a running median of `window` values of a curve: the standard
    error of a median, 1.2533 std / sqrt(window)."""
    return noise(values) * 1.2533 / math.sqrt(max(window, 1))
