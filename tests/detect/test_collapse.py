"""The collapse detector (autotune/detect/collapse.py)."""

from __future__ import annotations

import pytest

from autotune.detect import (
    DetectorConfig,
    Reason,
    at_collapse_level,
    check_epoch,
)
from tests.detect.common import CFG, NAN, records

MARGINAL, TRAIN_MARGINAL = 1.747, 1.759


COLLAPSE = DetectorConfig(marginal_loss=MARGINAL, train_marginal_loss=TRAIN_MARGINAL)


COLLAPSE_ROWS: list[tuple[str, list[float], float, bool]] = [
    # lr 0.02 / 0.04 / 0.15: stuck at the colour frequencies
    ("lr 0.02", [1.801, 1.749, 1.79, 1.747], 0.0, True),
    ("lr 0.04 after an overshoot", [2.013, 1.821, 1.762, 1.77], 0.0, True),
    ("lr 0.15 flat", [2.404, 1.755, 1.746, 1.746], 0.0, True),
    ("learned, then collapsed", [1.9, 1.6, 1.5, 1.75, 1.76, 1.75], 0.0, True),
    # must not trigger: normal runs pass through the level for an epoch or two
    ("lr 0.006", [1.755, 1.723, 1.559, 1.535], 0.0, False),
    ("lr 0.01", [1.763, 1.716, 1.58, 1.544], 0.0, False),
    ("lr 3e-4, descending onto the level and through it", [1.934, 1.821, 1.726, 1.691], 0.0,
     False),
    ("lr 1e-4, slow and still above the level", [2.061, 1.969, 1.931, 1.908, 1.896], 0.0,
     False),
    ("strictly falling inside the band", [2.2, 1.82, 1.79, 1.76], 0.0, False),
    ("the first epoch does not count", [1.75, 1.76], 0.0, False),
    ("fits its training pairs below the level", [1.8, 1.75, 1.76, 1.75], 0.0, False),
    ("flat but during a long warmup", [1.75, 1.76, 1.75], 3.0, False),
    ("flat, one epoch past the warmup is not enough", [1.75, 1.76, 1.75], 2.0, False),
    ("flat for two epochs past the warmup", [1.75, 1.76, 1.75, 1.76], 2.0, True),
]


@pytest.mark.parametrize("name, vals, warmup, expected", COLLAPSE_ROWS,
                         ids=[row[0] for row in COLLAPSE_ROWS])
def test_check_collapse_table(name: str, vals: list[float], warmup: float,
                              expected: bool) -> None:
    cfg = DetectorConfig(marginal_loss=MARGINAL, train_marginal_loss=TRAIN_MARGINAL,
                         warmup_epochs=warmup)
    trains = [v + 0.05 for v in vals]
    if name.startswith("fits its training pairs"):
        trains[1:] = [1.66] * (len(trains) - 1)
    history = records(trains, vals)
    # As the supervisor does: after every epoch, on the history so far.
    verdicts = [check_epoch(history[:n], cfg) for n in range(1, len(history) + 1)]
    called = [v for v in verdicts if v.reason is Reason.COLLAPSED]
    assert bool(called) is expected, [v.message for v in verdicts]
    assert all(v.diverged == (v.reason is Reason.COLLAPSED) for v in verdicts)


def test_collapse_needs_a_marginal_loss() -> None:
    history = records([1.8] * 4, [1.75, 1.76, 1.75, 1.76])
    assert check_epoch(history, COLLAPSE).reason is Reason.COLLAPSED
    assert not check_epoch(history, CFG)
    assert not check_epoch(history, DetectorConfig(marginal_loss=NAN))


def test_collapse_evidence_names_the_level_and_the_last_learning_epoch() -> None:
    history = records([2.0, 1.7, 1.6, 1.8, 1.8], [1.9, 1.6, 1.5, 1.75, 1.76])
    verdict = check_epoch(history, COLLAPSE)
    assert verdict.reason is Reason.COLLAPSED and verdict.epoch == 5
    assert verdict.evidence["marginal_loss"] == MARGINAL
    assert verdict.evidence["since_epoch"] == 4.0
    assert verdict.evidence["last_learning_epoch"] == 3.0
    assert "1.747" in verdict.message and "since epoch 4" in verdict.message
    never = check_epoch(records([1.8] * 3, [1.801, 1.749, 1.79]), COLLAPSE)
    assert never.evidence["last_learning_epoch"] == 0.0


def test_the_collapse_band_around_the_level() -> None:
    assert at_collapse_level({"val_loss": 1.747}, COLLAPSE)
    assert at_collapse_level({"val_loss": 1.74}, COLLAPSE)
    assert not at_collapse_level({"val_loss": 1.70}, COLLAPSE)  # below: learning
    assert not at_collapse_level({"val_loss": 1.90}, COLLAPSE)  # far above: not settled
    assert not at_collapse_level({"val_loss": NAN}, COLLAPSE)
    assert not at_collapse_level({"val_loss": 1.747}, CFG)  # no level known
