from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

import pytest

from autotune.detect import (
    OK,
    DetectorConfig,
    Reason,
    Verdict,
    at_collapse_level,
    check_epoch,
    check_nonfinite,
    check_step,
    detector_config,
)
from trainer.config import TrainConfig

NAN, INF = math.nan, math.inf
CFG = DetectorConfig()


def _history(trains: list[float], vals: list[float]) -> list[dict[str, Any]]:
    return [{"epoch": i + 1, "train_loss": t, "val_loss": v}
            for i, (t, v) in enumerate(zip(trains, vals, strict=True))]


def _noisy(n: int, base: float = 1.0, amp: float = 0.05) -> list[float]:
    # Deterministic noise: a small triangle wave around `base`.
    return [base + amp * ((i % 5) - 2) / 2 for i in range(n)]


# -- Reason, Verdict, DetectorConfig ------------------------------------------------------


def test_reason_values_are_the_contract_strings() -> None:
    assert [r.value for r in Reason] == ["nonfinite_loss", "nonfinite_grad", "loss_increase",
                                         "loss_spike", "grad_explosion", "overfitting",
                                         "collapsed"]
    assert all(r.message and r.message[0].islower() for r in Reason)
    assert Reason("loss_spike") is Reason.LOSS_SPIKE


def test_verdict_is_truthy_only_when_diverged() -> None:
    assert not OK
    assert OK == Verdict(False)
    assert Verdict(True, Reason.LOSS_SPIKE)


def test_verdict_to_dict_is_json() -> None:
    verdict = check_nonfinite(NAN, None, 7)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data == {"diverged": True, "reason": "nonfinite_loss",
                    "message": "The training loss is nan at step 7.",
                    "evidence": {"loss": None}, "step": 7, "epoch": None}


@pytest.mark.parametrize("kwargs, name", [
    ({"max_loss_increase": 0.0}, "max_loss_increase"),
    ({"max_loss_increase": NAN}, "max_loss_increase"),
    ({"spike_window": 0}, "spike_window"),
    ({"spike_sigmas": -1.0}, "spike_sigmas"),
    ({"spike_ratio": 1.0}, "spike_ratio"),
    ({"spike_min_steps": 60}, "spike_min_steps"),
    ({"grad_factor": 0.5}, "grad_factor"),
    ({"grad_min_steps": 0}, "grad_min_steps"),
    ({"overfit_patience": 0}, "overfit_patience"),
    ({"overfit_min_rise": -0.1}, "overfit_min_rise"),
    ({"min_epochs": 0}, "min_epochs"),
    ({"collapse_patience": 0}, "collapse_patience"),
    ({"collapse_below": 1.0}, "collapse_below"),
    ({"collapse_above": -0.1}, "collapse_above"),
])
def test_detector_config_names_the_bad_value(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DetectorConfig(**kwargs)


def test_detector_config_takes_max_loss_increase_from_training_config() -> None:
    assert detector_config({**TrainConfig().to_dict(), "max_loss_increase": 0.7, "grad_clip": 0.0}) == \
        DetectorConfig(max_loss_increase=0.7, warmup_epochs=TrainConfig().warmup_epochs)
    assert detector_config(TrainConfig(grad_clip=1.0)).clipped


def test_a_clipped_gradient_jump_counts_only_when_the_loss_rises() -> None:
    cfg = DetectorConfig(clipped=True)
    losses = [1.0 + 0.01 * (i % 3) for i in range(40)]
    grads = [1.0] * 40 + [50.0]
    # The loss held: clipping cut the step down, no harm done.
    assert not check_step(losses + [1.0], grads, 40, cfg)
    # The loss rose with it: an explosion all the same.
    assert check_step(losses + [1.5], grads, 40, cfg).reason is Reason.GRAD_EXPLOSION
    # Without clipping the raw jump is applied: an explosion at once.
    assert check_step(losses + [1.0], grads, 40, DetectorConfig()).reason is \
        Reason.GRAD_EXPLOSION


# -- step level ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss, grad, expected", [
    (1.0, 1.0, None),
    (1.0, None, None),
    (NAN, 1.0, Reason.NONFINITE_LOSS),
    (INF, None, Reason.NONFINITE_LOSS),
    (-INF, NAN, Reason.NONFINITE_LOSS),
    (1.0, NAN, Reason.NONFINITE_GRAD),
    (1.0, INF, Reason.NONFINITE_GRAD),
])
def test_check_nonfinite(loss: float, grad: float | None, expected: Reason | None) -> None:
    verdict = check_nonfinite(loss, grad, 12)
    assert verdict.reason is expected
    assert verdict.diverged is (expected is not None)
    if expected is not None:
        assert verdict.step == 12 and "step 12" in verdict.message


SPIKE_ROWS: list[tuple[str, list[float], list[float], Reason | None]] = [
    # must trigger
    ("nan loss", _noisy(40) + [NAN], [1.0] * 41, Reason.NONFINITE_LOSS),
    ("inf loss even without history", [INF], [], Reason.NONFINITE_LOSS),
    ("inf grad", _noisy(40) + [1.0], [1.0] * 40 + [INF], Reason.NONFINITE_GRAD),
    ("loss x100", _noisy(40) + [100.0], [1.0] * 41, Reason.LOSS_SPIKE),
    ("loss x100 and grad x100: the spike wins", _noisy(40) + [100.0], [1.0] * 40 + [100.0],
     Reason.LOSS_SPIKE),
    ("spike on a flat window", [2.0] * 30 + [7.0], [], Reason.LOSS_SPIKE),
    ("grad x50", _noisy(40) + [1.0], _noisy(40) + [50.0], Reason.GRAD_EXPLOSION),
    ("nan in the window is ignored", _noisy(30) + [NAN] + _noisy(10) + [50.0], [],
     Reason.LOSS_SPIKE),
    # must not trigger
    ("noise", _noisy(60), _noisy(60), None),
    ("a single small rise", _noisy(40) + [1.4], _noisy(40) + [1.5], None),
    ("x2.5 jump is under the ratio", [1.0] * 40 + [2.5], [], None),
    ("too little history", [1.0] * 10 + [100.0], [1.0] * 10 + [1000.0], None),
    ("a falling loss", [3.0 - 0.05 * i for i in range(50)], [], None),
    ("a fast early decline then a normal value", [5.0] * 25 + [1.0], [], None),
    ("grad x15 is under the factor", _noisy(40), [1.0] * 39 + [15.0], None),
    ("zero grad median gives no scale", [1.0] * 41, [0.0] * 40 + [5.0], None),
    ("empty history", [], [], None),
]


@pytest.mark.parametrize("name, losses, grads, expected", SPIKE_ROWS,
                         ids=[row[0] for row in SPIKE_ROWS])
def test_check_step_table(name: str, losses: list[float], grads: list[float],
                          expected: Reason | None) -> None:
    step = max(len(losses) - 1, 0)
    verdict = check_step(losses, grads, step, CFG)
    assert verdict.reason is expected, verdict.message
    if expected is not None:
        assert verdict.step == step and verdict.message.endswith(".")


def test_check_step_spike_evidence_and_message() -> None:
    verdict = check_step([1.0] * 30 + [10.0], [], 30, CFG)
    assert verdict.reason is Reason.LOSS_SPIKE
    assert verdict.evidence == {"loss": 10.0, "mean": 1.0, "std": 0.0, "threshold": 3.0,
                                "window": 30.0}
    assert "10 at step 30" in verdict.message and "10x" in verdict.message


def test_check_step_window_only_looks_back_spike_window_steps() -> None:
    # High losses long ago fall out of the 50-step window; a small window sees only them.
    losses = [10.0] * 20 + [1.0] * 50 + [5.0]
    assert check_step(losses, [], 70, CFG).reason is Reason.LOSS_SPIKE
    wide = DetectorConfig(spike_window=70)
    assert not check_step(losses, [], 70, wide)


def test_check_step_accepts_deques() -> None:
    losses: deque[float] = deque([1.0] * 30 + [10.0], maxlen=51)
    grads: deque[float] = deque([1.0] * 31, maxlen=51)
    assert check_step(losses, grads, 30, CFG).reason is Reason.LOSS_SPIKE


def test_check_step_explosion_evidence() -> None:
    verdict = check_step([1.0] * 31, [2.0] * 30 + [100.0], 30, CFG)
    assert verdict.reason is Reason.GRAD_EXPLOSION
    assert verdict.evidence["median"] == 2.0 and verdict.evidence["threshold"] == 40.0


# -- epoch level --------------------------------------------------------------------------

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
    history = _history(trains, vals)
    verdict = check_epoch(history, CFG)
    assert verdict.reason is expected, verdict.message
    assert verdict.diverged is (expected is not None)
    if expected is not None:
        assert verdict.epoch == len(history) and verdict.message.endswith(".")


def test_check_epoch_empty_history() -> None:
    assert check_epoch([], CFG) == OK


def test_loss_increase_evidence_names_the_numbers() -> None:
    verdict = check_epoch(_history([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7]), CFG)
    assert verdict.reason is Reason.LOSS_INCREASE
    assert verdict.evidence["best_epoch"] == 3.0
    assert verdict.evidence["best_val_loss"] == 1.3
    assert verdict.evidence["threshold"] == pytest.approx(1.6)
    assert "1.7 at epoch 4" in verdict.message and "best 1.3 (epoch 3)" in verdict.message


def test_threshold_follows_max_loss_increase() -> None:
    history = _history([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7])
    assert not check_epoch(history, DetectorConfig(max_loss_increase=0.5))


def test_min_epochs_holds_back_all_but_nonfinite() -> None:
    late = DetectorConfig(min_epochs=5)
    assert not check_epoch(_history([2.0, 1.6, 1.3, 1.5], [1.8, 1.5, 1.3, 1.7]), late)
    nan = _history([2.0, 1.6], [1.8, NAN])
    assert check_epoch(nan, late).reason is Reason.NONFINITE_LOSS


def test_epoch_numbers_come_from_the_records() -> None:
    # After a rollback the logical timeline restarts at the rollback epoch.
    history = [{"epoch": e, "train_loss": t, "val_loss": v}
               for e, t, v in [(3, 1.3, 1.3), (4, 1.5, 1.7)]]
    verdict = check_epoch(history, CFG)
    assert verdict.reason is Reason.LOSS_INCREASE and verdict.epoch == 4
    assert verdict.evidence["best_epoch"] == 3.0


# -- collapse -----------------------------------------------------------------------------

# The tiny profile's marginal loss (colour frequencies, as augmented) and validation curves
# measured on it (6-8 epochs, no warmup; `python benchmarks/collapse_curves.py`).
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
    history = _history(trains, vals)
    # As the supervisor does: after every epoch, on the history so far.
    verdicts = [check_epoch(history[:n], cfg) for n in range(1, len(history) + 1)]
    called = [v for v in verdicts if v.reason is Reason.COLLAPSED]
    assert bool(called) is expected, [v.message for v in verdicts]
    assert all(v.diverged == (v.reason is Reason.COLLAPSED) for v in verdicts)


def test_collapse_needs_a_marginal_loss() -> None:
    history = _history([1.8] * 4, [1.75, 1.76, 1.75, 1.76])
    assert check_epoch(history, COLLAPSE).reason is Reason.COLLAPSED
    assert not check_epoch(history, CFG)
    assert not check_epoch(history, DetectorConfig(marginal_loss=NAN))


def test_collapse_evidence_names_the_level_and_the_last_learning_epoch() -> None:
    history = _history([2.0, 1.7, 1.6, 1.8, 1.8], [1.9, 1.6, 1.5, 1.75, 1.76])
    verdict = check_epoch(history, COLLAPSE)
    assert verdict.reason is Reason.COLLAPSED and verdict.epoch == 5
    assert verdict.evidence["marginal_loss"] == MARGINAL
    assert verdict.evidence["since_epoch"] == 4.0
    assert verdict.evidence["last_learning_epoch"] == 3.0
    assert "1.747" in verdict.message and "since epoch 4" in verdict.message
    never = check_epoch(_history([1.8] * 3, [1.801, 1.749, 1.79]), COLLAPSE)
    assert never.evidence["last_learning_epoch"] == 0.0


def test_a_rise_past_the_threshold_is_instability_before_collapse() -> None:
    # From 1.4 up to the level is a rise of 0.35 > 0.3: the rise is what the user sees.
    history = _history([1.5, 1.5, 1.8, 1.8, 1.8], [1.4, 1.45, 1.75, 1.76, 1.75])
    assert check_epoch(history, COLLAPSE).reason is Reason.LOSS_INCREASE


def test_detector_config_takes_warmup_and_marginal_from_the_run() -> None:
    cfg = detector_config(TrainConfig(warmup_epochs=2.0), 2.48, 1.75, 1.76)
    assert (cfg.warmup_epochs, cfg.reference_loss, cfg.marginal_loss,
            cfg.train_marginal_loss) == (2.0, 2.48, 1.75, 1.76)


def test_the_collapse_band_around_the_level() -> None:
    assert at_collapse_level({"val_loss": 1.747}, COLLAPSE)
    assert at_collapse_level({"val_loss": 1.74}, COLLAPSE)
    assert not at_collapse_level({"val_loss": 1.70}, COLLAPSE)  # below: learning
    assert not at_collapse_level({"val_loss": 1.90}, COLLAPSE)  # far above: not settled
    assert not at_collapse_level({"val_loss": NAN}, COLLAPSE)
    assert not at_collapse_level({"val_loss": 1.747}, CFG)  # no level known
