"""Judgement on runs that really go wrong: tables of (rows, expected first finding), with nan
and inf rows, and the detectors they rest on (`autotune.detect.trend`)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from autotune.detect import DetectorConfig, check_epoch, curve_noise, flat_start, trend
from autotune.diagnose import diagnose
from autotune.diagnose.epoch_records import EpochRecords
from autotune.diagnose.validation import val_noise

NAN, INF = math.nan, math.inf


def _rows(train: list[float], grad: list[float] | None = None,
          val: list[float] | None = None) -> list[dict[str, float]]:
    rows = []
    for e, loss in enumerate(train):
        row = {"epoch": float(e), "train_loss": loss}
        if grad is not None:
            row["grad_norm"] = grad[e]
        if val is not None:
            row["val_loss"] = val[e]
        rows.append(row)
    return rows


FALLING = [round(0.3 + 2.0 * 0.8 ** e, 4) for e in range(12)]

# (rows, expected first finding, its epoch)
NONFINITE = [
    (_rows(FALLING[:6] + [NAN] + FALLING[7:]), "nonfinite_loss", 6),
    (_rows(FALLING[:6] + [INF] + FALLING[7:]), "nonfinite_loss", 6),
    (_rows(FALLING[:6] + [-INF] + FALLING[7:]), "nonfinite_loss", 6),
    (_rows(FALLING, [1.0] * 5 + [INF] + [1.0] * 6), "nonfinite_grad", 5),
    (_rows(FALLING, [1.0] * 5 + [NAN] + [1.0] * 6), "nonfinite_grad", 5),
    # A NaN loss and an inf gradient at one step: the loss is what is reported.
    (_rows(FALLING[:4] + [NAN] * 8, [1.0] * 4 + [INF] * 8), "nonfinite_loss", 4),
    # An inf gradient first, the NaN loss after it: the gradient was first.
    (_rows(FALLING[:4] + [3.0] + [NAN] * 7, [1.0] * 4 + [INF] * 8), "nonfinite_grad", 4),
    (_rows(FALLING, val=FALLING[:8] + [NAN] + FALLING[9:]), "nonfinite_loss", 8),
]


@pytest.mark.parametrize(("rows", "code", "epoch"), NONFINITE)
def test_nonfinite_loss_apart_from_nonfinite_grad(rows: list[dict[str, float]], code: str,
                                                  epoch: int) -> None:
    first = diagnose(rows, None)[0]
    assert first.code == code
    assert first.evidence["epoch"] == epoch


def _noisy(values: list[float], sigma: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [round(v + rng.gauss(0, sigma), 4) for v in values]


FLAT = [
    # Flat from the start at a chance-like level, with noise: never learned.
    (_rows(_noisy([1.386] * 30, 0.01)), "not_learning"),
    (_rows(_noisy([2.30] * 12, 0.02), val=_noisy([2.31] * 12, 0.02, 1)), "not_learning"),
    # Falls by 10%: learned (slowly).
    (_rows([2.0 - 0.2 * e / 29 for e in range(30)]), "healthy"),
    # Too short to tell.
    (_rows([1.386] * 5), "healthy"),
    # Flat training loss but a falling validation loss: learning.
    (_rows([1.0] * 12, val=[1.0 - 0.05 * e for e in range(12)]), "healthy"),
]


@pytest.mark.parametrize(("rows", "code"), FLAT)
def test_not_learning_needs_no_chance_level(rows: list[dict[str, float]], code: str) -> None:
    assert diagnose(rows, None)[0].code == code


def test_collapsed_outranks_not_learning() -> None:
    rows = [{"epoch": float(e), "train_loss": 1.0, "val_loss": 1.0, "marginal_loss": 1.0,
             "val_cell_acc": 0.5} for e in range(1, 13)]
    codes = [f.code for f in diagnose(rows, None)]
    assert codes[0] == "collapsed"
    assert "not_learning" not in codes


def test_a_spike_while_the_loss_falls_fast_is_seen_against_the_trend() -> None:
    # Falling 8% a step; one step at 4x its trend is still below 3x the flat mean of the
    # window before it (which the loss left behind).
    falling = [10.0 * 0.92 ** s for s in range(120)]
    falling[100] *= 4.0
    window = falling[50:100]
    assert falling[100] < 3.0 * sum(window) / len(window)  # the flat mean's rule misses it
    rows = [{"epoch": float(s // 10), "step": float(s), "train_loss": v}
            for s, v in enumerate(falling)]
    first = diagnose(rows, None, per_step=True)[0]
    assert first.code == "loss_spike"
    assert first.evidence["step"] == 100
    assert first.evidence["began_step"] == 100


def test_repeated_spikes_name_where_the_trouble_began() -> None:
    losses = [round(2.0 * 0.9 ** e + 0.2, 4) for e in range(40)]
    for e in (20, 27, 34):
        losses[e] *= 3.0
    found = {f.code: f for f in diagnose(_rows(losses), None)}
    spike = found["loss_spike"]
    assert spike.evidence["count"] == 3
    assert spike.evidence["began_epoch"] == 20


def test_a_noisy_small_validation_set_is_not_a_divergence() -> None:
    # Healthy: training falls; validation on a few examples wiggles by +-15% around a
    # falling trend, past the 30% threshold now and then, and back.
    train = [0.5 + 1.5 * 0.85 ** e for e in range(40)]
    val = [v * (1.0 + 0.15 * math.sin(2.7 * e) + 0.1 * math.cos(5.3 * e))
           for e, v in enumerate([0.6 + 1.5 * 0.85 ** e for e in range(40)])]
    codes = [f.code for f in diagnose(_rows(train, val=val), None)]
    assert not {"loss_increase", "lr_too_high", "overfitting"} & set(codes)
    assert codes[0] == "healthy"


def test_a_real_validation_rise_stands_out_of_the_noise() -> None:
    train = [0.5 + 1.5 * 0.85 ** e for e in range(40)]
    val = [0.6 + 1.5 * 0.85 ** e for e in range(25)] + [0.62 + 0.08 * k for k in range(15)]
    assert diagnose(_rows(train, val=val), None)[0].code == "overfitting"


def test_the_validation_noise_is_at_least_the_sampling_error_of_its_set() -> None:
    flat = [1.0, 1.0, 1.0, 1.0, 1.0]
    assert val_noise(flat, None) == 0.0
    assert val_noise(flat, 100) == pytest.approx(0.1)  # loss / sqrt(N)


# ---------------------------------------------------------------------- detect.trend


def test_trend_follows_level_and_slope() -> None:
    falling = [10.0 * 0.9 ** i for i in range(60)]  # a rate: a line in log space
    judged = trend(falling, DetectorConfig())
    assert judged.level[59] == pytest.approx(falling[58])  # not below what was seen
    assert judged.slope[59] == pytest.approx(math.log(0.9))
    assert not judged.spike.any()
    signed = [1.0 - 0.1 * i for i in range(60)]  # crosses zero: a line in the values
    judged = trend(signed, DetectorConfig())
    assert judged.slope[59] == pytest.approx(-0.1)
    assert judged.level[59] == pytest.approx(signed[58])  # kept within the window's range


@pytest.mark.parametrize(("values", "spike_at"), [
    ([1.0] * 30 + [5.0], 30),
    ([1.0] * 10 + [NAN] + [1.0] * 19 + [5.0], 30),  # a gap in the window
    ([1.0] * 30 + [INF], None),  # not finite: the non-finite check's, not a spike
    ([1.0] * 10 + [5.0], None),  # fewer than spike_min_steps before it
])
def test_trend_spike_table(values: list[float], spike_at: int | None) -> None:
    judged = trend(values, DetectorConfig())
    found = np.flatnonzero(judged.spike).tolist()
    assert found == ([] if spike_at is None else [spike_at])


def test_flat_start_and_curve_noise() -> None:
    cfg = DetectorConfig()
    assert flat_start([1.0] * 10, cfg).flat
    assert not flat_start([1.0 - 0.05 * i for i in range(10)], cfg).flat
    assert not flat_start([1.0 + 0.05 * i for i in range(10)], cfg).flat  # a rise
    assert not flat_start([1.0] * 7, cfg).flat  # too few records
    assert curve_noise([1.0, 2.0, 3.0, 4.0]) == 0.0  # a straight line has no noise
    assert curve_noise([1.0, NAN, 2.0]) == 0.0


# ---------------------------------------------------------------- bounded epoch records


@pytest.mark.parametrize("seed", range(6))
def test_bounded_epoch_records_give_what_the_whole_history_gives(seed: int) -> None:
    rng = random.Random(seed)
    cfg = DetectorConfig(max_loss_increase=0.05)
    records = EpochRecords(cfg)
    history: list[dict[str, float]] = []
    for e in range(300):
        train = rng.choice([1.0 - e / 400, 1.0 - e / 400 + rng.random() * 0.01, NAN]
                           if e % 50 else [INF])
        record = {"epoch": float(e), "train_loss": train,
                  "val_loss": rng.choice([0.5 + rng.random() * 0.1, NAN, 0.4 + e / 1000])}
        history.append(record)
        records.append(record)
        assert check_epoch(records.records, cfg) == check_epoch(history, cfg)
        records.settle()
        assert len(records.records) <= 2 * records.tail + 3


@pytest.mark.parametrize(("rows", "classes", "code"), [
    # Flat at ln 4 from the start: at a known chance level it is a collapse ...
    (_rows([1.386 + 0.005 * (-1) ** e for e in range(12)]), 4, "collapsed"),
    # ... and without the number of classes, a run that never learned.
    (_rows([1.386 + 0.005 * (-1) ** e for e in range(12)]), None, "not_learning"),
    # Learned (val below ln 4), then fell back onto it and stayed.
    (_rows([1.0 - 0.05 * e for e in range(12)],
           val=[1.2 - 0.08 * e if e < 6 else 1.39 for e in range(12)]), 4, "collapsed"),
    # Well below chance all along: learning.
    (_rows(FALLING), 4, "healthy"),
])
def test_collapsed_at_a_known_chance_level(rows: list[dict[str, float]], classes: int | None,
                                           code: str) -> None:
    assert diagnose(rows, None, classes=classes)[0].code == code
