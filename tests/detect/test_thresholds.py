"""The detectors' thresholds (autotune/detect/thresholds.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from autotune.detect import (
    DetectorConfig,
    detector_config,
)
from trainer.config import TrainConfig

NAN, INF = math.nan, math.inf


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
    hparams = {**TrainConfig().to_dict(), "max_loss_increase": 0.7, "grad_clip": 0.0}
    assert detector_config(hparams) == \
        DetectorConfig(max_loss_increase=0.7, warmup_epochs=TrainConfig().warmup_epochs)
    assert detector_config(TrainConfig(grad_clip=1.0)).clipped


MARGINAL, TRAIN_MARGINAL = 1.747, 1.759


def test_detector_config_takes_warmup_and_marginal_from_the_run() -> None:
    cfg = detector_config(TrainConfig(warmup_epochs=2.0), 2.48, 1.75, 1.76)
    assert (cfg.warmup_epochs, cfg.reference_loss, cfg.marginal_loss,
            cfg.train_marginal_loss) == (2.0, 2.48, 1.75, 1.76)
