"""Step-level detectors (autotune/detect/steps.py)."""

from __future__ import annotations

from collections import deque

import pytest

from autotune.detect import (
    DetectorConfig,
    Reason,
    check_nonfinite,
    check_step,
)
from tests.detect.common import CFG, INF, NAN


def _noisy(n: int, base: float = 1.0, amp: float = 0.05) -> list[float]:
    # Deterministic noise: a small triangle wave around `base`.
    return [base + amp * ((i % 5) - 2) / 2 for i in range(n)]


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


MARGINAL, TRAIN_MARGINAL = 1.747, 1.759


def test_a_nan_out_of_a_steady_stretch_is_sudden() -> None:
    cfg = DetectorConfig()
    steady = _noisy(40)
    grads = [1.0] * 41
    verdict = check_step(deque(steady + [NAN], maxlen=100), grads, 40, cfg)
    assert verdict.reason is Reason.NONFINITE_LOSS and verdict.evidence["sudden"] == 1.0
    # A spike just before, an exploding gradient just before, or a NaN right after another:
    # not sudden.
    spiked = steady[:-1] + [9.0]
    assert check_step(spiked + [NAN], grads, 40, cfg).evidence["sudden"] == 0.0
    exploding = [1.0] * 39 + [80.0, NAN]
    assert check_step(steady + [NAN], exploding, 40, cfg).evidence["sudden"] == 0.0
    assert check_step(steady + [NAN, NAN], grads + [1.0], 41, cfg).evidence["sudden"] == 0.0
    # A NaN gradient out of the same stretch is sudden as well.
    assert check_step(steady + [1.0], [1.0] * 40 + [NAN], 40, cfg).evidence["sudden"] == 1.0


def test_a_gradient_jump_inside_the_warmup_is_left_to_the_run() -> None:
    grads = [2.0] * 30 + [100.0]
    inside = DetectorConfig(warmup_steps=40.0)
    assert not check_step([1.0] * 31, grads, 30, inside)
    assert check_step([1.0] * 31, grads, 40, inside).reason is Reason.GRAD_EXPLOSION  # after
    assert check_step([1.0] * 31, grads, 30, DetectorConfig(warmup_steps=40.0,
                                                            warmup_grace=False))
    # A spike or a NaN inside it still is called.
    assert check_step([1.0] * 30 + [10.0], [2.0] * 31, 30, inside).reason is Reason.LOSS_SPIKE
    assert check_step([1.0] * 30 + [NAN], [2.0] * 31, 30, inside)


def test_a_nan_in_a_runs_first_steps_is_sudden_unless_one_came_before() -> None:
    """Too few steps to judge a spike show no climb: the first step included."""
    cfg = DetectorConfig()
    assert check_step(_noisy(5) + [NAN], [1.0] * 6, 5, cfg).evidence["sudden"] == 1.0
    assert check_step([NAN], [], 0, cfg).evidence["sudden"] == 1.0
    assert check_step([1.0, NAN, 1.0, NAN], [1.0] * 4, 3, cfg).evidence["sudden"] == 0.0
    # An exploding gradient just before still counts once there are steps to judge it by.
    assert check_step(_noisy(25) + [NAN], [1.0] * 24 + [80.0, NAN], 25,
                      cfg).evidence["sudden"] == 0.0
