"""Epoch-level detectors (autotune/detect/epochs.py)."""

from __future__ import annotations

import pytest

from autotune.detect import (
    OK,
    DetectorConfig,
    Reason,
    check_epoch,
)
from tests.detect.common import CFG, INF, NAN, records

FALLING = [2.0, 1.6, 1.3, 1.1, 1.0, 0.9]


EPOCH_ROWS: list[tuple[str, list[float], list[float], Reason | None]] = [
    # non-finite: at once, even at the first epoch
    ("nan val at epoch 1", [2.0], [NAN], Reason.NONFINITE_LOSS),
    ("inf train", [2.0, INF], [1.5, 1.4], Reason.NONFINITE_LOSS),
    ("-inf val", [2.0, 1.8], [1.5, -INF], Reason.NONFINITE_LOSS),
    ("None val (JSON null)", [2.0, 1.8], [1.5, None], Reason.NONFINITE_LOSS),  # type: ignore
    # instability: val past best + 0.3 and the training loss rose too
    ("val jump with train rising", [2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7],
     Reason.LOSS_INCREASE),
    ("val jump with train flat", [2.0, 1.6, 1.3, 1.3], [1.8, 1.5, 1.3, 1.7],
     Reason.LOSS_INCREASE),
    ("train rose once since the best", [2.0, 1.6, 1.7, 1.5], [1.8, 1.3, 1.5, 1.7],
     Reason.LOSS_INCREASE),
    ("best long ago, train wobbling", [2.0, 1.0, 1.2, 1.1, 1.3], [1.0, 1.1, 1.2, 1.25, 1.31],
     Reason.LOSS_INCREASE),
    ("nan train since the best", [2.0, 1.6, NAN, 1.2], [1.8, 1.3, 1.4, 1.7],
     Reason.LOSS_INCREASE),
    # overfitting: past the threshold with train falling at every epoch since the best
    ("val jump with train falling", [2.0, 1.6, 1.3, 1.0], [1.8, 1.5, 1.3, 1.7],
     Reason.OVERFITTING),
    # overfitting below the threshold
    ("monotone val rise, train falling", FALLING, [1.8, 1.5, 1.3, 1.32, 1.35, 1.4],
     Reason.OVERFITTING),
    ("net rise with most epochs rising", FALLING, [1.8, 1.5, 1.3, 1.36, 1.34, 1.4],
     Reason.OVERFITTING),
    # must not trigger
    ("first epoch", [2.0], [5.0], None),
    ("healthy", FALLING, [1.8, 1.5, 1.3, 1.2, 1.15, 1.1], None),
    ("noise around a plateau", FALLING, [1.3, 1.31, 1.29, 1.3, 1.31, 1.3], None),
    ("a single small rise", FALLING, [1.8, 1.5, 1.3, 1.2, 1.15, 1.25], None),
    ("rise of exactly the threshold", [2.0, 1.8], [1.0, 1.3], None),
    ("a big rise from a worse epoch, still under best + 0.3", [2.0, 1.9, 1.8],
     [1.0, 0.9, 1.15], None),
    ("tiny monotone rise is noise", FALLING, [1.8, 1.5, 1.3, 1.301, 1.302, 1.303], None),
    ("val rising while train also rises is not overfitting", [2.0, 1.6, 1.3, 1.31, 1.32, 1.33],
     [1.8, 1.5, 1.3, 1.35, 1.4, 1.45], None),
    ("too few epochs for the patience", [2.0, 1.6, 1.3], [1.8, 1.85, 1.9], None),
    ("one rise in three is not most", FALLING, [1.8, 1.5, 1.3, 1.28, 1.27, 1.35], None),
    ("nan in earlier val is skipped for the best", [2.0, 1.6, 1.3], [NAN, 1.5, 1.6], None),
]


@pytest.mark.parametrize("name, trains, vals, expected", EPOCH_ROWS,
                         ids=[row[0] for row in EPOCH_ROWS])
def test_check_epoch_table(name: str, trains: list[float], vals: list[float],
                           expected: Reason | None) -> None:
    history = records(trains, vals)
    verdict = check_epoch(history, CFG)
    assert verdict.reason is expected, verdict.message
    assert verdict.diverged is (expected is not None)
    if expected is not None:
        assert verdict.epoch == len(history) and verdict.message.endswith(".")


def test_check_epoch_empty_history() -> None:
    assert check_epoch([], CFG) == OK


def test_loss_increase_evidence_names_the_numbers() -> None:
    verdict = check_epoch(records([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7]), CFG)
    assert verdict.reason is Reason.LOSS_INCREASE
    assert verdict.evidence["best_epoch"] == 3.0
    assert verdict.evidence["best_val_loss"] == 1.3
    assert verdict.evidence["threshold"] == pytest.approx(1.6)
    assert "1.7 at epoch 4" in verdict.message and "best 1.3 (epoch 3)" in verdict.message


def test_threshold_follows_max_loss_increase() -> None:
    history = records([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7])
    assert not check_epoch(history, DetectorConfig(max_loss_increase=0.5))


def test_min_epochs_holds_back_all_but_nonfinite() -> None:
    late = DetectorConfig(min_epochs=5)
    assert not check_epoch(records([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7]), late)
    nan = records([2.0, 1.6], [1.8, NAN])
    assert check_epoch(nan, late).reason is Reason.NONFINITE_LOSS


def test_epoch_numbers_come_from_the_records() -> None:
    # After a rollback the logical timeline restarts at the rollback epoch.
    history = [{"epoch": e, "train_loss": t, "val_loss": v}
               for e, t, v in [(3, 1.3, 1.3), (4, 1.5, 1.7)]]
    verdict = check_epoch(history, CFG)
    assert verdict.reason is Reason.LOSS_INCREASE and verdict.epoch == 4
    assert verdict.evidence["best_epoch"] == 3.0


MARGINAL, TRAIN_MARGINAL = 1.747, 1.759


COLLAPSE = DetectorConfig(marginal_loss=MARGINAL, train_marginal_loss=TRAIN_MARGINAL)


def test_a_rise_past_the_threshold_is_instability_before_collapse() -> None:
    # From 1.4 up to the level is a rise of 0.35 > 0.3: the rise is what the user sees.
    history = records([1.5, 1.5, 1.8, 1.8, 1.8], [1.4, 1.45, 1.75, 1.76, 1.75])
    assert check_epoch(history, COLLAPSE).reason is Reason.LOSS_INCREASE


def test_a_rise_inside_the_warmup_waits_an_epoch_for_confirmation() -> None:
    cfg = DetectorConfig(warmup_epochs=2.0)
    bump = records([2.0, 1.9, 1.8], [1.9, 1.7, 2.2])  # epoch 3, right after the warmup
    assert not check_epoch(bump, cfg)  # not yet
    assert not check_epoch(records([2.0, 1.9, 1.8, 1.7], [1.9, 1.7, 2.2, 1.6]), cfg)  # back
    held = records([2.0, 1.9, 1.8, 1.8], [1.9, 1.7, 2.2, 2.3])
    assert check_epoch(held, cfg).reason is Reason.LOSS_INCREASE  # two in a row: called
    # After the warmup's next epoch, and with a patience of 1, at once.
    late = records([2.0, 1.9, 1.8, 1.8, 1.8], [1.9, 1.7, 1.6, 1.6, 2.1])
    assert check_epoch(late, cfg).reason is Reason.LOSS_INCREASE
    assert check_epoch(bump, DetectorConfig(warmup_epochs=2.0, warmup_rise_patience=1))
    # Above the know-nothing level: at once, at any epoch.
    assert check_epoch(records([2.0, 9.0], [1.9, 9.0]),
                       DetectorConfig(warmup_epochs=2.0, reference_loss=2.48))


def test_inside_the_warmup_a_rise_or_overfitting_is_left_to_the_run() -> None:
    cfg = DetectorConfig(warmup_epochs=5.0)
    held = records([2.0, 1.9, 1.8, 1.8], [1.9, 1.7, 2.2, 2.3])  # epochs 3 and 4: inside
    assert not check_epoch(held, cfg)
    overfit = records([2.0, 1.8, 1.6, 1.4, 1.2], [1.5, 1.55, 1.6, 1.7, 1.8])
    assert check_epoch(overfit, DetectorConfig(warmup_epochs=5.0, warmup_grace=False))
    assert not check_epoch(overfit, DetectorConfig(warmup_epochs=5.5))  # epoch 5 < 5.5
    # A rise that lasts past the warmup is called (two epochs in a row, right after it).
    lasting = records([2.0, 1.9, 1.8, 1.8, 1.8, 1.8], [1.9, 1.7, 2.2, 2.3, 2.3, 2.3])
    assert check_epoch(lasting, cfg).reason is Reason.LOSS_INCREASE
    # Without the grace (diagnose reads logs whole), as before; above the know-nothing
    # level, at once.
    assert check_epoch(held, DetectorConfig(warmup_epochs=5.0, warmup_grace=False))
    assert check_epoch(records([2.0, 9.0], [1.9, 9.0]),
                       DetectorConfig(warmup_epochs=5.0, reference_loss=2.48))


def test_a_lone_spike_above_the_know_nothing_level_waits_an_epoch() -> None:
    # Reference 2.48 + 0.3: a validation loss of 4.8 with the training loss at 1.66 is a
    # lone bad reading (measured: the run left alone falls to 1.35 at the next epoch).
    cfg = DetectorConfig(reference_loss=2.48)
    spike = records([1.96, 1.66], [1.56, 4.84])
    assert not check_epoch(spike, cfg)  # not a rise, not overfitting: it waits
    assert not check_epoch(records([1.96, 1.66, 2.10], [1.56, 4.84, 1.35]), cfg)  # back
    held = records([1.96, 1.66, 1.70], [1.56, 4.84, 3.90])
    verdict = check_epoch(held, cfg)
    assert verdict.reason is Reason.LOSS_INCREASE and "knows nothing" in verdict.message
    # The training loss above the line too: at once, the first epoch included.
    assert check_epoch(records([4.82], [4.54]), cfg).reason is Reason.LOSS_INCREASE
    assert check_epoch(records([1.96, NAN], [1.56, 4.84]), cfg)
    # A patience of 1 (diagnose) calls it at once.
    assert check_epoch(spike, DetectorConfig(reference_loss=2.48, reference_patience=1))
    # Back below the line but still past the best + 0.3: the rise rule calls it.
    assert check_epoch(records([1.96, 1.66, 1.70], [1.56, 4.84, 2.00]), cfg).reason \
        is Reason.LOSS_INCREASE


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_reference_patience_is_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="reference_patience must be a positive integer"):
        DetectorConfig(reference_patience=bad)  # type: ignore[arg-type]
