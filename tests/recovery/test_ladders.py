"""The policy's data: ladders and RecoveryConfig (autotune/recovery/ladders.py)."""

from __future__ import annotations

from typing import Any

import pytest

from autotune.detect import Reason
from autotune.recovery.ladders import DEFAULT_LADDERS, Action, RecoveryConfig

POLICY = RecoveryConfig()


@pytest.mark.parametrize("kwargs, name", [
    ({"max_recoveries": -1}, "max_recoveries"),
    ({"lr_factor": 1.0}, "lr_factor"),
    ({"lr_factor": 0.0}, "lr_factor"),
    ({"cut_lr_factor": 1.0}, "cut_lr_factor"),
    ({"clip_factor": 1.5}, "clip_factor"),
    ({"clip_default": 0.0}, "clip_default"),
    ({"skip_radius": -1}, "skip_radius"),
    ({"wd_factor": 1.0}, "wd_factor"),
    ({"rollback": "latest"}, "rollback"),
    ({"ladders": {Reason.LOSS_SPIKE: ()}}, "loss_spike"),
    ({"ladders": {"loss_spike": ["jump"]}}, "jump"),
])
def test_recovery_config_names_the_bad_value(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RecoveryConfig(**kwargs)


def test_default_ladders_cover_every_reason() -> None:
    assert set(POLICY.ladders) == set(Reason)
    assert POLICY.ladders[Reason.LOSS_INCREASE] == (
        (Action.SMOOTHING_OFF,), (Action.LOWER_LR,), (Action.LOWER_LR,),
        (Action.LONGER_WARMUP, Action.LOWER_LR), (Action.TIGHTER_CLIP, Action.LOWER_LR))


def test_custom_ladder_replaces_only_its_reason_and_accepts_flat_actions() -> None:
    policy = RecoveryConfig(ladders={"overfitting": ("lower_lr", Action.AUGMENTATION_ON)})
    assert policy.ladders[Reason.OVERFITTING] == ((Action.LOWER_LR,), (Action.AUGMENTATION_ON,))
    assert policy.ladders[Reason.LOSS_SPIKE] == DEFAULT_LADDERS[Reason.LOSS_SPIKE]
    assert hash(policy) == hash(RecoveryConfig(ladders={"overfitting": ("lower_lr",
                                                                         "augmentation_on")}))
