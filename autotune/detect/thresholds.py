"""The detectors' thresholds (one source: the supervisor and `diagnose` read the same)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DetectorConfig", "detector_config"]


@dataclass(frozen=True)
class DetectorConfig:
    """Thresholds of the detectors; the defaults suit ARC runs of a few to a hundred epochs."""

    max_loss_increase: float = 0.3
    """Validation loss above best + this is a divergence."""
    spike_window: int = 50
    """Steps of running mean and deviation a training loss is compared with."""
    spike_sigmas: float = 6.0
    """A spike is a loss above mean + sigmas * std of the window ..."""
    spike_ratio: float = 3.0
    """... and above ratio * mean (so a near-constant window does not flag noise)."""
    spike_min_steps: int = 20
    """No spike verdict before the window holds this many finite losses."""
    grad_window: int = 50
    """Steps of running median a gradient norm is compared with."""
    grad_factor: float = 20.0
    """An explosion is a gradient norm above factor * the window's median."""
    grad_min_steps: int = 20
    """No explosion verdict before the window holds this many finite norms."""
    overfit_patience: int = 3
    """Epochs of training loss falling while validation loss rises."""
    overfit_min_rise: float = 0.02
    """Total validation rise over those epochs for it to count as overfitting."""
    min_epochs: int = 1
    """No epoch-level verdict (other than a non-finite loss) before this many epochs."""
    clipped: bool = False
    """Gradients are clipped: a large raw gradient norm is then cut down before it is
    applied, so it counts as an explosion only when the loss rises with it."""
    reference_loss: float | None = None
    """The loss of a model that knows nothing (uniform over the classes). A validation loss
    above it + max_loss_increase is instability at any epoch, the first included, when
    there is no best value yet to compare with."""
    marginal_loss: float | None = None
    """The loss of a model that learned the class frequencies and nothing about the input
    (`trainer.data.marginal_loss`): the level a collapsed run sits at. None: no check."""
    train_marginal_loss: float | None = None
    """The same on the training pairs; a training loss below it is not a collapse."""
    collapse_patience: int = 2
    """Epochs in a row at that level (after warmup, not falling) that make a collapse
    (why 2: docs/decisions.md, "Collapse patience")."""
    collapse_below: float = 0.01
    """The level's band: from marginal_loss * (1 - collapse_below) ..."""
    collapse_above: float = 0.05
    """... to marginal_loss * (1 + collapse_above)."""
    warmup_epochs: float = 0.0
    """Epochs that end inside the warmup do not count towards a collapse (nor does the
    first: every run ends its first epoch near the level)."""
    warmup_rise_patience: int = 2
    """A validation rise past the run's best + `max_loss_increase` (not above
    `reference_loss`; instability or overfitting) in an epoch that ends inside the warmup
    or in the epoch after it is called only when this many epochs in a row are above (why
    2: docs/decisions.md, "A rise during warmup waits an epoch"); 1 calls it at once, as
    at any later epoch."""
    reference_patience: int = 2
    """A validation loss above `reference_loss` + `max_loss_increase` while the epoch's
    training loss stayed below that line is called only when this many epochs in a row are
    above it (why 2: docs/decisions.md, "A lone spike of the validation loss waits an
    epoch"); 1 calls it at once. A training loss above the line too is called at once."""
    warmup_grace: bool = True
    """While the rate still climbs, a live run is not called on a bump: a validation rise or
    overfitting in an epoch that ends inside the warmup (epoch < `warmup_epochs`), and a
    gradient jump at a step inside it (step < `warmup_steps`), are left to the run, which
    gets over them by itself (measured: docs/decisions.md, "The warmup's bumps are left to
    the run"). A non-finite value, a loss above `reference_loss`, a loss spike and a rise
    that lasts past the warmup are called as before. `diagnose` turns it off: it reports
    every bump of a log it reads whole."""
    warmup_steps: float = 0.0
    """The warmup in optimizer steps (the supervisor sets `warmup_epochs` times the steps of
    an epoch once it knows them); 0: no step is inside it."""
    noise_sigmas: float = 3.0
    """A change smaller than this many times the noise of its own curve is noise, not a
    rise (for Gaussian noise about 1 in 700 such changes would be chance). The noise is
    measured from the curve (`trend.curve_noise`) or, for a validation loss on a set of
    known size N, at least the sampling error of a mean over N examples."""
    flat_min_records: int = 8
    """No verdict that a loss never fell (`trend.flat_start`) on fewer records."""
    flat_max_drop: float = 0.02
    """A loss whose last fifth is not below its first fifth by more than this fraction
    never learned."""

    def __post_init__(self) -> None:
        _check_positive("max_loss_increase", self.max_loss_increase)
        _check_positive("spike_sigmas", self.spike_sigmas)
        _check_positive("overfit_patience", self.overfit_patience)
        _check_positive("min_epochs", self.min_epochs)
        _check_positive("collapse_patience", self.collapse_patience)
        _check_positive("warmup_rise_patience", self.warmup_rise_patience)
        if isinstance(self.reference_patience, bool) or not isinstance(
                self.reference_patience, int) or self.reference_patience < 1:
            raise ValueError(f"reference_patience must be a positive integer but got "
                             f"{self.reference_patience}.")
        _check_positive("noise_sigmas", self.noise_sigmas)
        _check_positive("flat_min_records", self.flat_min_records)
        if not (math.isfinite(self.flat_max_drop) and 0.0 <= self.flat_max_drop < 1.0):
            raise ValueError(f"flat_max_drop must be in [0, 1) but got {self.flat_max_drop}.")
        for name in ("collapse_below", "collapse_above"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 1.0):
                raise ValueError(f"{name} must be in [0, 1) but got {value}.")
        if not (math.isfinite(self.spike_ratio) and self.spike_ratio > 1.0):
            raise ValueError(f"spike_ratio must be greater than 1 but got {self.spike_ratio}.")
        if not (math.isfinite(self.grad_factor) and self.grad_factor > 1.0):
            raise ValueError(f"grad_factor must be greater than 1 but got {self.grad_factor}.")
        if not (math.isfinite(self.overfit_min_rise) and self.overfit_min_rise >= 0.0):
            raise ValueError(
                f"overfit_min_rise must be non-negative but got {self.overfit_min_rise}.")
        for name, window, least in (("spike", self.spike_window, self.spike_min_steps),
                                    ("grad", self.grad_window, self.grad_min_steps)):
            _check_positive(f"{name}_window", window)
            _check_positive(f"{name}_min_steps", least)
            if least > window:
                raise ValueError(f"{name}_min_steps must be at most {name}_window ({window}) "
                                 f"but got {least}.")


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive but got {value}.")


def detector_config(hparams: Mapping[str, Any] | Any, reference_loss: float | None = None,
                    marginal_loss: float | None = None,
                    train_marginal_loss: float | None = None, *,
                    max_loss_increase: float | None = None) -> DetectorConfig:
    """The detector thresholds for a run: its hyperparameters (clipping and warmup, read
    when present), its `max_loss_increase`, and the reference losses of its trainer when
    it tells them.

    Args:
        hparams: a mapping (a trainer's `hparams`), or an object with `to_dict()`.
        reference_loss, marginal_loss, train_marginal_loss: see DetectorConfig.
        max_loss_increase: default: `hparams["max_loss_increase"]`, else DetectorConfig's.
    """
    values = hparams.to_dict() if hasattr(hparams, "to_dict") else dict(hparams)
    if max_loss_increase is None:
        max_loss_increase = values.get("max_loss_increase", DetectorConfig.max_loss_increase)
    return DetectorConfig(max_loss_increase=float(max_loss_increase),
                          clipped=float(values.get("grad_clip") or 0.0) > 0,
                          reference_loss=reference_loss, marginal_loss=marginal_loss,
                          train_marginal_loss=train_marginal_loss,
                          warmup_epochs=float(values.get("warmup_epochs") or 0.0))
