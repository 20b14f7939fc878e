"""Divergence detectors: pure functions of the metrics history that return a Verdict.

Step-level checks (`check_nonfinite`, `check_step`) look at the per-step training loss and
gradient norm; the epoch-level check (`check_epoch`) looks at the epoch records of the
current logical timeline. Each returns `OK` or a diverged Verdict with a Reason, the
numbers that triggered it and one readable sentence. Nothing here does I/O or keeps state;
what to do about a verdict is `autotune.recovery`'s business.

Instability and overfitting are kept apart because their cures differ (lower the learning
rate vs regularise and stop early). The rule, applied when the validation loss has risen
above its best by more than `max_loss_increase`:

- the training loss fell at every epoch since the best validation epoch: the model is
  fitting the training set better while generalising worse, so it is OVERFITTING;
- otherwise (the training loss rose, stalled, or is missing somewhere since the best): the
  optimisation itself went wrong, so it is LOSS_INCREASE (instability).

Below that threshold, OVERFITTING is also reported early, when over the last
`overfit_patience` epochs the training loss fell at every epoch while the validation loss
rose by at least `overfit_min_rise` in total, rising at most of those epochs (a monotone
rise is the clearest case). A validation curve that is flat at convergence wiggles by tiny
amounts, so a monotone rise smaller than `overfit_min_rise` is treated as noise.

A run can also fail without a rising loss: too high a learning rate can drive the model to
predict every cell from how common each colour is, whatever the input, and leave it there
(on ARC: the background and the grid's end). Its validation loss then sits at the loss of
that prediction (`marginal_loss`, which the trainer computes from the data) instead of
going below it. COLLAPSED is `collapse_patience` epochs in a row, all after the warmup
and the first epoch (which every run ends near that level), with the validation loss
inside a narrow band around that level (`at_collapse_level`) and not strictly falling
(a run that descends onto the level and through it is a slow start, not a collapse), and
the last training loss not below the same level on the training pairs (a model that fits
its training pairs better than the frequencies is learning something, if not generalising).
Lowering the learning rate from the collapsed weights does not bring such a model back, so
the evidence names the last epoch that was below the level, for the rollback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from typing import Any

from trainer.config import TrainConfig

__all__ = [
    "OK",
    "DetectorConfig",
    "Reason",
    "Verdict",
    "at_collapse_level",
    "check_collapse",
    "check_epoch",
    "check_nonfinite",
    "check_step",
    "detector_config",
]


class Reason(str, Enum):
    """Why a run is judged diverged; the values are the contract's `reason` strings."""

    NONFINITE_LOSS = "nonfinite_loss"
    NONFINITE_GRAD = "nonfinite_grad"
    LOSS_INCREASE = "loss_increase"
    LOSS_SPIKE = "loss_spike"
    GRAD_EXPLOSION = "grad_explosion"
    OVERFITTING = "overfitting"
    COLLAPSED = "collapsed"

    @property
    def message(self) -> str:
        """A readable description of the reason, without numbers."""
        return _REASON_MESSAGES[self]


_REASON_MESSAGES: Mapping[Reason, str] = {
    Reason.NONFINITE_LOSS: "the loss became NaN or infinite",
    Reason.NONFINITE_GRAD: "the gradient norm became NaN or infinite",
    Reason.LOSS_INCREASE: "the validation loss rose above its best by more than the allowed "
                          "increase while the training loss rose too",
    Reason.LOSS_SPIKE: "the training loss spiked far above its recent running mean",
    Reason.GRAD_EXPLOSION: "the gradient norm exploded far above its recent running median",
    Reason.OVERFITTING: "the training loss kept falling while the validation loss rose",
    Reason.COLLAPSED: "the validation loss sat at the level of a model that predicts only "
                      "how common each colour is, with the learning rate at its peak",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: diverged or not, why, and the numbers behind it.

    A Verdict is truthy exactly when it says diverged, so a per-step callback can return
    it as it is (`OK` lets training go on).
    """

    diverged: bool
    reason: Reason | None = None
    message: str = ""
    evidence: dict[str, float] = field(default_factory=dict, hash=False)
    step: int | None = None
    epoch: int | None = None

    def __bool__(self) -> bool:
        return self.diverged

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (non-finite evidence becomes null; the message keeps it)."""
        return {
            "diverged": self.diverged,
            "reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "evidence": {k: (v if math.isfinite(v) else None) for k, v in self.evidence.items()},
            "step": self.step,
            "epoch": self.epoch,
        }


OK = Verdict(False)


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
    """Epochs in a row at that level (after warmup, not falling) that make a collapse. 2:
    no run that learned was called in 74 measured curves (`benchmarks/collapse_curves.py`,
    `benchmarks/collapse_fixes.py`), and each epoch less is an epoch of a collapsed run
    saved."""
    collapse_below: float = 0.01
    """The level's band: from marginal_loss * (1 - collapse_below) ..."""
    collapse_above: float = 0.05
    """... to marginal_loss * (1 + collapse_above)."""
    warmup_epochs: float = 0.0
    """Epochs that end inside the warmup do not count towards a collapse (nor does the
    first: every run ends its first epoch near the level)."""

    def __post_init__(self) -> None:
        _check_positive("max_loss_increase", self.max_loss_increase)
        _check_positive("spike_sigmas", self.spike_sigmas)
        _check_positive("overfit_patience", self.overfit_patience)
        _check_positive("min_epochs", self.min_epochs)
        _check_positive("collapse_patience", self.collapse_patience)
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


def detector_config(config: TrainConfig, reference_loss: float | None = None,
                    marginal_loss: float | None = None,
                    train_marginal_loss: float | None = None) -> DetectorConfig:
    """The detector thresholds for a training configuration (its `max_loss_increase`,
    clipping and warmup) and the reference losses of its trainer, when it tells them."""
    return DetectorConfig(max_loss_increase=config.max_loss_increase,
                          clipped=config.grad_clip > 0, reference_loss=reference_loss,
                          marginal_loss=marginal_loss, train_marginal_loss=train_marginal_loss,
                          warmup_epochs=config.warmup_epochs)


# -- step level ---------------------------------------------------------------------------


def check_nonfinite(loss: float, grad_norm: float | None, step: int) -> Verdict:
    """A NaN or infinite training loss or gradient norm at optimizer step `step`."""
    if not math.isfinite(loss):
        return Verdict(True, Reason.NONFINITE_LOSS,
                       f"The training loss is {loss} at step {step}.",
                       {"loss": loss}, step=step)
    if grad_norm is not None and not math.isfinite(grad_norm):
        return Verdict(True, Reason.NONFINITE_GRAD,
                       f"The gradient norm is {grad_norm} at step {step} "
                       f"(training loss {loss:.4g}).",
                       {"loss": loss, "grad_norm": grad_norm}, step=step)
    return OK


def check_step(losses: Sequence[float], grad_norms: Sequence[float], step: int,
               cfg: DetectorConfig) -> Verdict:
    """Check the latest optimizer step against the steps before it.

    Args:
        losses: per-step training losses of the current timeline; the last one is `step`'s.
        grad_norms: per-step gradient norms before clipping, aligned with `losses` (may be
            empty when not recorded).
        step: the optimizer step of the last element.
        cfg: the thresholds.

    Returns:
        A non-finite verdict first, then a loss spike, then a gradient explosion, else `OK`.
        A spike is checked before an explosion because a bad batch inflates both.
    """
    if len(losses) == 0:
        return OK
    loss = float(losses[-1])
    grad = float(grad_norms[-1]) if len(grad_norms) > 0 else None
    verdict = check_nonfinite(loss, grad, step)
    if verdict:
        return verdict
    verdict = _check_spike(loss, _preceding(losses, cfg.spike_window), step, cfg)
    if verdict or grad is None:
        return verdict
    verdict = _check_explosion(grad, _preceding(grad_norms, cfg.grad_window), step, cfg)
    if verdict and cfg.clipped and not _rising(loss, _preceding(losses, cfg.spike_window)):
        return OK  # clipping cut the step down and the loss did not suffer: no harm done
    return verdict


def _rising(loss: float, window: list[float]) -> bool:
    """The loss is above the running mean of the window before it."""
    return bool(window) and loss > math.fsum(window) / len(window)


def _preceding(values: Sequence[float], window: int) -> list[float]:
    """The finite values among the `window` before the last (works on deques too)."""
    n = len(values)
    head = islice(values, max(0, n - 1 - window), n - 1)
    return [float(v) for v in head if math.isfinite(v)]


def _check_spike(loss: float, window: list[float], step: int, cfg: DetectorConfig) -> Verdict:
    if len(window) < cfg.spike_min_steps:
        return OK
    mean = math.fsum(window) / len(window)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in window) / len(window))
    threshold = max(mean + cfg.spike_sigmas * std, cfg.spike_ratio * mean)
    if loss <= threshold:
        return OK
    return Verdict(True, Reason.LOSS_SPIKE,
                   f"The training loss jumped to {loss:.4g} at step {step}, "
                   f"{loss / mean if mean > 0 else math.inf:.3g}x its running mean {mean:.4g} "
                   f"(std {std:.3g}) over the previous {len(window)} steps.",
                   {"loss": loss, "mean": mean, "std": std, "threshold": threshold,
                    "window": float(len(window))}, step=step)


def _check_explosion(grad: float, window: list[float], step: int,
                     cfg: DetectorConfig) -> Verdict:
    if len(window) < cfg.grad_min_steps:
        return OK
    ordered = sorted(window)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    # A zero median (no gradient at all) gives no scale to compare with.
    if median <= 0.0 or grad <= cfg.grad_factor * median:
        return OK
    return Verdict(True, Reason.GRAD_EXPLOSION,
                   f"The gradient norm jumped to {grad:.4g} at step {step}, {grad / median:.3g}x "
                   f"its running median {median:.4g} over the previous {len(window)} steps.",
                   {"grad_norm": grad, "median": median,
                    "threshold": cfg.grad_factor * median, "window": float(len(window))},
                   step=step)


# -- epoch level --------------------------------------------------------------------------


def check_epoch(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> Verdict:
    """Check the latest epoch record against the earlier ones of the same timeline.

    Args:
        history: epoch records of the current logical timeline, oldest first, each with at
            least `epoch`, `train_loss` and `val_loss` (floats; NaN, inf or None allowed).
        cfg: the thresholds.

    Returns:
        NONFINITE_LOSS, then LOSS_INCREASE, COLLAPSED, OVERFITTING (see the module
        docstring for the rules that keep them apart), else `OK`.
    """
    if len(history) == 0:
        return OK
    last = history[-1]
    epoch = int(last["epoch"])
    train, val = _value(last, "train_loss"), _value(last, "val_loss")
    if not (math.isfinite(train) and math.isfinite(val)):
        which = "validation" if not math.isfinite(val) else "training"
        bad = val if not math.isfinite(val) else train
        return Verdict(True, Reason.NONFINITE_LOSS,
                       f"The {which} loss is {bad} at epoch {epoch}.",
                       {"train_loss": train, "val_loss": val}, epoch=epoch)
    if len(history) < cfg.min_epochs:
        return OK
    verdict = _check_reference(last, cfg)
    if verdict:
        return verdict
    verdict = _check_increase(history, cfg)
    if verdict:
        return verdict
    verdict = check_collapse(history, cfg)
    if verdict:
        return verdict
    return _check_overfitting(history, cfg)


def _value(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    return math.nan if value is None else float(value)


def _strictly_falling(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values) and all(
        b < a for a, b in zip(values, values[1:]))


def at_collapse_level(record: Mapping[str, Any], cfg: DetectorConfig) -> bool:
    """The epoch's validation loss lies in the band around the colour-frequency level (a
    collapse is `collapse_patience` such epochs); False when the level is unknown."""
    band = _collapse_band(cfg)
    return band is not None and band[0] <= _value(record, "val_loss") <= band[1]


def _collapse_band(cfg: DetectorConfig) -> tuple[float, float] | None:
    """(low, high) around the colour-frequency level; None when the level is unknown."""
    marginal = cfg.marginal_loss
    if marginal is None or not (math.isfinite(marginal) and marginal > 0.0):
        return None
    return marginal * (1.0 - cfg.collapse_below), marginal * (1.0 + cfg.collapse_above)


def check_collapse(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> Verdict:
    """COLLAPSED when the last `collapse_patience` epochs sat at the level of a model that
    predicts only the class frequencies (see the module docstring), else `OK`."""
    band = _collapse_band(cfg)
    window = history[-cfg.collapse_patience:]
    if band is None or len(window) < cfg.collapse_patience:
        return OK
    if int(window[0]["epoch"]) <= max(cfg.warmup_epochs, 1.0):
        return OK  # every run's first epoch ends near the level; warmup runs below the peak
    (low, high), marginal = band, cfg.marginal_loss
    vals = [_value(r, "val_loss") for r in window]
    if not all(at_collapse_level(r, cfg) for r in window) or _strictly_falling(vals):
        return OK  # below the level (learning), or still descending onto it (a slow start)
    train, level = _value(window[-1], "train_loss"), cfg.train_marginal_loss
    if level is not None and math.isfinite(train) and train < level * (1.0 - cfg.collapse_below):
        return OK  # it fits its training pairs better than the frequencies: not collapsed
    since, epoch = int(window[0]["epoch"]), int(window[-1]["epoch"])
    learned = [int(r["epoch"]) for r in history[:-len(window)] if _value(r, "val_loss") < low]
    shown = ", ".join(f"{v:.4g}" for v in vals)
    return Verdict(True, Reason.COLLAPSED,
                   f"Collapse: the validation loss has sat at {shown} for "
                   f"{len(vals)} epochs since epoch {since}, the level of a model that predicts "
                   f"only how common each colour is ({marginal:.4g}): it learned nothing about "
                   f"the inputs.",
                   {"val_loss": vals[-1], "train_loss": train, "marginal_loss": marginal,
                    "low": low, "high": high,
                    "since_epoch": float(since),
                    "last_learning_epoch": float(max(learned, default=0))}, epoch=epoch)


def _check_reference(last: Mapping[str, Any], cfg: DetectorConfig) -> Verdict:
    if cfg.reference_loss is None:
        return OK
    val, epoch = _value(last, "val_loss"), int(last["epoch"])
    limit = cfg.reference_loss + cfg.max_loss_increase
    if val <= limit:
        return OK
    return Verdict(True, Reason.LOSS_INCREASE,
                   f"Instability: the validation loss {val:.4g} at epoch {epoch} is worse than "
                   f"a model that knows nothing ({cfg.reference_loss:.4g}) by more than the "
                   f"allowed {cfg.max_loss_increase:g}.",
                   {"val_loss": val, "reference_loss": cfg.reference_loss, "threshold": limit},
                   epoch=epoch)


def _check_increase(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> Verdict:
    earlier = [(i, _value(r, "val_loss")) for i, r in enumerate(history[:-1])]
    earlier = [(i, v) for i, v in earlier if math.isfinite(v)]
    if not earlier:
        return OK
    best_i, best = min(earlier, key=lambda p: p[1])
    last = history[-1]
    epoch, val = int(last["epoch"]), _value(last, "val_loss")
    if val <= best + cfg.max_loss_increase:
        return OK
    best_epoch = int(history[best_i]["epoch"])
    trains = [_value(r, "train_loss") for r in history[best_i:]]
    evidence = {"val_loss": val, "best_val_loss": best, "best_epoch": float(best_epoch),
                "threshold": best + cfg.max_loss_increase, "train_loss": trains[-1],
                "train_loss_at_best": trains[0]}
    rise = (f"the validation loss {val:.4g} at epoch {epoch} is {val - best:.3g} above its "
            f"best {best:.4g} (epoch {best_epoch}), past the allowed {cfg.max_loss_increase:g}")
    # Overfitting fits the training data better than it generalises: training loss falling
    # and below the validation loss. A training loss falling from far above it is a model
    # climbing back out of an instability.
    if _strictly_falling(trains) and trains[-1] < val:
        return Verdict(True, Reason.OVERFITTING,
                       f"Overfitting: {rise}, while the training loss fell at every epoch "
                       f"since ({trains[0]:.4g} -> {trains[-1]:.4g}).",
                       evidence, epoch=epoch)
    return Verdict(True, Reason.LOSS_INCREASE,
                   f"Instability: {rise}, and the training loss did not keep falling "
                   f"({trains[0]:.4g} at epoch {best_epoch} -> {trains[-1]:.4g}).",
                   evidence, epoch=epoch)


def _check_overfitting(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> Verdict:
    patience = cfg.overfit_patience
    if len(history) < patience + 1:
        return OK
    window = history[-(patience + 1):]
    trains = [_value(r, "train_loss") for r in window]
    vals = [_value(r, "val_loss") for r in window]
    if not _strictly_falling(trains) or not all(math.isfinite(v) for v in vals):
        return OK
    if trains[-1] >= vals[-1]:
        return OK  # no generalisation gap: not overfitting
    rises = sum(b > a for a, b in zip(vals, vals[1:]))
    net = vals[-1] - vals[0]
    if net < cfg.overfit_min_rise or 2 * rises <= patience:
        return OK
    first, epoch = int(window[0]["epoch"]), int(window[-1]["epoch"])
    return Verdict(True, Reason.OVERFITTING,
                   f"Overfitting: from epoch {first} to {epoch} the training loss fell "
                   f"({trains[0]:.4g} -> {trains[-1]:.4g}) while the validation loss rose "
                   f"({vals[0]:.4g} -> {vals[-1]:.4g}) at {rises} of {patience} epochs.",
                   {"val_rise": net, "rising_epochs": float(rises),
                    "train_loss": trains[-1], "val_loss": vals[-1],
                    "first_epoch": float(first)}, epoch=epoch)
