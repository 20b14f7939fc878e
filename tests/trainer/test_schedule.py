"""lr_at: warmup times decay at the points that matter; the audit catches overwrites."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.config import TrainConfig
from trainer.schedule import apply_lr, audit, lr_at, lr_at_epoch

SPE = 10  # steps per epoch
BASE = TrainConfig(learning_rate=1e-3, warmup_epochs=2, epochs=10, min_lr_ratio=0.1)


@pytest.mark.parametrize("schedule, mid", [
    ("cosine", 1e-4 + 9e-4 * 0.5),      # halfway through the decay: half-way down
    ("linear", 1e-4 + 9e-4 * 0.5),
    ("constant", 1e-3),
])
def test_lr_at_points(schedule: str, mid: float) -> None:
    config = BASE.replace(schedule=schedule)
    last = config.epochs * SPE - 1
    assert lr_at(0, config, SPE) == pytest.approx(1e-3 / 20)          # 1 of 20 warmup steps
    assert lr_at(2 * SPE - 1, config, SPE) == pytest.approx(1e-3)     # end of warmup
    assert lr_at(6 * SPE - 1, config, SPE) == pytest.approx(mid)      # epoch 6 of 2..10
    floor = 1e-3 if schedule == "constant" else 1e-4
    assert lr_at(last, config, SPE) == pytest.approx(floor)           # the last step


def test_no_warmup_starts_at_peak() -> None:
    config = BASE.replace(warmup_epochs=0.0, schedule="constant")
    assert lr_at(0, config, SPE) == 1e-3


def test_fractional_warmup() -> None:
    config = BASE.replace(warmup_epochs=0.5)
    assert lr_at(1, config, SPE) == pytest.approx(1e-3 * 2 / 5)
    assert lr_at(4, config, SPE) == pytest.approx(1e-3)


def test_cosine_decays_monotonically_after_warmup() -> None:
    values = [lr_at_epoch(e / 4, BASE) for e in range(8, 41)]
    assert all(b <= a for a, b in zip(values, values[1:]))


def test_apply_lr_writes_every_group() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(1))]}])
    apply_lr(opt, 0.123)
    assert [g["lr"] for g in opt.param_groups] == [0.123, 0.123]


def test_audit_accepts_the_schedule() -> None:
    steps = list(range(100))
    result = audit(steps, [lr_at(s, BASE, SPE) for s in steps], BASE, SPE)
    assert result.ok and result.checked == 100


def test_audit_flags_a_warmup_that_overwrites_the_scheduler() -> None:
    # The classic bug: warmup code sets the peak every step, so the decay never happens.
    steps = list(range(100))
    applied = [min(1.0, (s + 1) / 20) * 1e-3 for s in steps]
    result = audit(steps, applied, BASE, SPE)
    assert not result.ok
    assert result.first_bad_step == 20
    assert math.isclose(result.applied, 1e-3)
    assert "lr_at gives" in result.message


def test_audit_flags_a_compounded_chained_scheduler() -> None:
    # A manual warmup multiplied into a chainable scheduler: the factor compounds.
    steps = list(range(30))
    applied = [lr_at(s, BASE, SPE) * (0.9 ** s) for s in steps]
    result = audit(steps, applied, BASE, SPE)
    assert not result.ok and result.first_bad_step == 1
