"""TrainingParts: a cut of the learning rate survives the framework's own scheduler."""

from __future__ import annotations

import pytest
import torch

from autotune.integrations.parts import TrainingParts
from autotune.integrations.session import check_single_process
from autotune.recovery.checkpoints import cpu_copy
from tests.integrations.common import network, warmup_then_decay


def _parts(scheduler: str, clip: list[float]) -> TrainingParts:
    model = network()
    optimizer = torch.optim.AdamW([
        {"params": [model[0].weight, model[2].weight], "weight_decay": 0.01},
        {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}], lr=0.3)
    schedulers = {
        "lambda": lambda: torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(4, 40)),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 40),
        "exponential": lambda: torch.optim.lr_scheduler.ExponentialLR(optimizer, 0.9),
        "sequential": lambda: torch.optim.lr_scheduler.SequentialLR(optimizer, [
            torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, 4),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 36)], [4]),
    }
    return TrainingParts(model, optimizer, schedulers[scheduler](), get_clip=lambda: clip[0],
                         set_clip=lambda v: clip.__setitem__(0, v))


def _rates(parts: TrainingParts, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        parts.optimizer.step()
        parts.scheduler.step()
        out.append(parts.lr)
    return out


def test_a_rate_written_into_the_param_groups_alone_is_undone_by_lambda_lr() -> None:
    parts = _parts("lambda", [0.0])
    _rates(parts, 6)
    for group in parts.optimizer.param_groups:
        group["lr"] /= 3
    reference = _parts("lambda", [0.0])
    assert _rates(parts, 3) == pytest.approx(_rates(reference, 9)[6:])  # the cut is gone


@pytest.mark.parametrize("scheduler", ["lambda", "cosine", "exponential", "sequential"])
def test_apply_changes_cuts_every_later_rate_by_the_factor(scheduler: str) -> None:
    parts, reference = _parts(scheduler, [0.0]), _parts(scheduler, [0.0])
    _rates(parts, 6)
    _rates(reference, 6)
    parts.apply_changes({"learning_rate": parts.hparams["learning_rate"] / 3})
    assert parts.hparams["learning_rate"] == pytest.approx(0.1)
    assert _rates(parts, 10) == pytest.approx([r / 3 for r in _rates(reference, 10)])


def test_a_rollback_brings_the_old_state_and_the_changes_are_applied_again() -> None:
    parts = _parts("lambda", [0.0])
    saved = cpu_copy(parts.state_dict())
    _rates(parts, 6)
    parts.apply_changes({"learning_rate": 0.1, "grad_clip": 1.0, "weight_decay": 0.02})
    parts.load_state_dict(saved)
    assert parts.hparams == {"learning_rate": 0.3, "grad_clip": 1.0, "weight_decay": 0.01}
    parts.apply_changes({"learning_rate": 0.1, "weight_decay": 0.02})
    assert [g["weight_decay"] for g in parts.optimizer.param_groups] == [0.02, 0.0]
    assert _rates(parts, 1) == pytest.approx([0.1 * warmup_then_decay(4, 40)(1)])


def test_more_than_one_process_is_refused() -> None:
    check_single_process(1, "Lightning")
    with pytest.raises(ValueError, match="world_size 2"):
        check_single_process(2, "Lightning")
