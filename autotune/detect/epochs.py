"""Epoch-level detectors: pure functions of the epoch records that return a Verdict.

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

In an epoch that ends inside the warmup (epoch < warmup, the rate still climbing) a live
run is not called on a rise or on overfitting at all (`warmup_grace`; a loss above the
know-nothing level still is). A rise past that threshold in the epochs right after it
(epoch <= warmup + 1), whichever of the two it would be, waits for confirmation: it is
called when `warmup_rise_patience` epochs in a row were above their best +
`max_loss_increase`. A run whose rate is still climbing often bumps and comes back by
itself (measured: docs/decisions.md). A validation loss above the know-nothing level
(`reference_loss`) + `max_loss_increase` is LOSS_INCREASE at any epoch: at once when the
epoch's training loss is above that line too (or non-finite), else when
`reference_patience` epochs in a row are above it. A lone validation reading that high
while the training loss stayed low is a spike the run gets over by itself (measured:
docs/decisions.md, "A lone spike of the validation loss waits an epoch"); while it waits
nothing else is called on it (it is neither overfitting nor yet a rise).

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
from typing import Any

from autotune.detect.collapse import check_collapse, strictly_falling, value_of
from autotune.detect.thresholds import DetectorConfig
from autotune.detect.verdict import OK, Reason, Verdict, nonfinite_loss

__all__ = ["check_epoch"]


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
    train, val = value_of(last, "train_loss"), value_of(last, "val_loss")
    if not (math.isfinite(train) and math.isfinite(val)):
        which = "validation" if not math.isfinite(val) else "training"
        bad = val if not math.isfinite(val) else train
        return nonfinite_loss(which, bad, f"epoch {epoch}",
                              {"train_loss": train, "val_loss": val}, epoch=epoch)
    if len(history) < cfg.min_epochs:
        return OK
    if _reference_pending(history, cfg):
        return OK  # a lone reading above the know-nothing level waits an epoch
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


def _reference_line(cfg: DetectorConfig) -> float | None:
    """The know-nothing level + `max_loss_increase`; None when the level is unknown."""
    return None if cfg.reference_loss is None else cfg.reference_loss + cfg.max_loss_increase


def _reference_pending(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> bool:
    """The last validation loss is above the know-nothing line but waits: the epoch's
    training loss stayed below the line, and fewer than `reference_patience` epochs in a
    row were above it (a lone bad reading the run gets over by itself). The last record's
    losses are finite here (`check_epoch` called a non-finite one already)."""
    line = _reference_line(cfg)
    last = history[-1]
    if line is None or value_of(last, "val_loss") <= line or value_of(last, "train_loss") > line:
        return False  # below the line, or the training blew up with it: no waiting
    window = history[-cfg.reference_patience:]
    return len(window) < cfg.reference_patience or any(
        value_of(r, "val_loss") <= line for r in window)


def _check_reference(last: Mapping[str, Any], cfg: DetectorConfig) -> Verdict:
    line = _reference_line(cfg)
    val, epoch = value_of(last, "val_loss"), int(last["epoch"])
    if line is None or val <= line:
        return OK
    assert cfg.reference_loss is not None  # a line exists only around a known level
    return Verdict(True, Reason.LOSS_INCREASE,
                   f"Instability: the validation loss {val:.4g} at epoch {epoch} is worse than "
                   f"a model that knows nothing ({cfg.reference_loss:.4g}) by more than the "
                   f"allowed {cfg.max_loss_increase:g}.",
                   {"val_loss": val, "reference_loss": cfg.reference_loss, "threshold": line},
                   epoch=epoch)


def in_warmup(epoch: int, cfg: DetectorConfig) -> bool:
    """The epoch ends while the rate still climbs, and the config leaves such bumps to the
    run (`warmup_grace`)."""
    return cfg.warmup_grace and epoch < cfg.warmup_epochs


def _check_increase(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> Verdict:
    if in_warmup(int(history[-1]["epoch"]), cfg):
        return OK  # the rate still climbs: a bump it causes is the run's to get over
    found = _best_before(history)
    if found is None:
        return OK
    best_i, best = found
    last = history[-1]
    epoch, val = int(last["epoch"]), value_of(last, "val_loss")
    if val <= best + cfg.max_loss_increase:
        return OK
    if not _confirmed(history, epoch, cfg):
        return OK  # a bump while the rate still climbs: wait for the next epoch
    best_epoch = int(history[best_i]["epoch"])
    trains = [value_of(r, "train_loss") for r in history[best_i:]]
    evidence = {"val_loss": val, "best_val_loss": best, "best_epoch": float(best_epoch),
                "threshold": best + cfg.max_loss_increase, "train_loss": trains[-1],
                "train_loss_at_best": trains[0]}
    rise = (f"the validation loss {val:.4g} at epoch {epoch} is {val - best:.3g} above its "
            f"best {best:.4g} (epoch {best_epoch}), past the allowed {cfg.max_loss_increase:g}")
    # Overfitting fits the training data better than it generalises: training loss falling
    # and below the validation loss. A training loss falling from far above it is a model
    # climbing back out of an instability.
    if strictly_falling(trains) and trains[-1] < val:
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
    if len(history) < patience + 1 or in_warmup(int(history[-1]["epoch"]), cfg):
        return OK
    window = history[-(patience + 1):]
    trains = [value_of(r, "train_loss") for r in window]
    vals = [value_of(r, "val_loss") for r in window]
    if not strictly_falling(trains) or not all(math.isfinite(v) for v in vals):
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


def _confirmed(history: Sequence[Mapping[str, Any]], epoch: int, cfg: DetectorConfig) -> bool:
    """A rise past the threshold may be called: after the warmup's next epoch at once,
    before it only when the `warmup_rise_patience - 1` epochs before were above their own
    threshold too."""
    if cfg.warmup_rise_patience <= 1 or epoch > math.ceil(cfg.warmup_epochs) + 1:
        return True
    need = cfg.warmup_rise_patience - 1
    return len(history) >= need + 2 and all(
        _above_best(history[:-k + 1], cfg) for k in range(2, need + 2))


def _best_before(history: Sequence[Mapping[str, Any]]) -> tuple[int, float] | None:
    """Index and value of the lowest finite validation loss before the last record."""
    earlier = [(i, value_of(r, "val_loss")) for i, r in enumerate(history[:-1])]
    return min(((i, v) for i, v in earlier if math.isfinite(v)), key=lambda p: p[1],
               default=None)


def _above_best(history: Sequence[Mapping[str, Any]], cfg: DetectorConfig) -> bool:
    """The last record's validation loss is past the best before it + max_loss_increase."""
    best = _best_before(history)
    return best is not None and value_of(history[-1], "val_loss") > best[1] + \
        cfg.max_loss_increase
