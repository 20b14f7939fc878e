"""The collapse detector: a validation loss stuck at the colour-frequency level.

A too-high learning rate can drive a model to predict every cell from how common each
class is, whatever the input, and leave it there. Its validation loss then sits at the loss
of that prediction (`marginal_loss`, which the trainer computes from the data); see
`autotune.detect.epochs` for the rule. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.detect.thresholds import DetectorConfig
from autotune.detect.verdict import OK, Reason, Verdict

__all__ = ["at_collapse_level", "check_collapse", "strictly_falling", "value_of"]


def value_of(record: Mapping[str, Any], key: str) -> float:
    value = record[key]
    return math.nan if value is None else float(value)


def strictly_falling(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values) and all(
        b < a for a, b in zip(values, values[1:]))


def at_collapse_level(record: Mapping[str, Any], cfg: DetectorConfig) -> bool:
    """The epoch's validation loss lies in the band around the colour-frequency level (a
    collapse is `collapse_patience` such epochs); False when the level is unknown."""
    band = _collapse_band(cfg)
    return band is not None and band[0] <= value_of(record, "val_loss") <= band[1]


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
    assert marginal is not None  # a band exists only around a known level
    vals = [value_of(r, "val_loss") for r in window]
    if not all(at_collapse_level(r, cfg) for r in window) or strictly_falling(vals):
        return OK  # below the level (learning), or still descending onto it (a slow start)
    train, level = value_of(window[-1], "train_loss"), cfg.train_marginal_loss
    if level is not None and math.isfinite(train) and train < level * (1.0 - cfg.collapse_below):
        return OK  # it fits its training pairs better than the frequencies: not collapsed
    since, epoch = int(window[0]["epoch"]), int(window[-1]["epoch"])
    learned = [int(r["epoch"]) for r in history[:-len(window)] if value_of(r, "val_loss") < low]
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
