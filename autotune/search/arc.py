"""The ARC trainer as one build among others: a space over TrainConfig keys, a profile.

`ArcBuild` samples a trial's parameters from the space, resolves its `TrainConfig`
(profile, then the space's fixed values, then flags such as `--epochs`, then the sampled
parameters) and makes an `autotune.recovery.runs.ArcTrainer`, whose optional members add
the held-out ARC scores and the schedule audit. The data of a configuration is loaded once
per process for the trials, the winner's scoring and its re-check (`data_for`).
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autotune.recovery.runs import RunConfig, arc_trainer
from autotune.recovery.settings import SupervisorConfig
from autotune.search.setup import TrialSetup, next_seed
from autotune.search.space import Space
from autotune.search.vocabulary import TrialAttr
from trainer.config import TrainConfig
from trainer.data import ArcData, build_data

__all__ = ["ArcBuild", "data_for"]

_DATA: dict[tuple[Any, ...], ArcData] = {}


def data_for(config: TrainConfig) -> ArcData:
    """The data of a configuration, built once per process (the trials, the winner's
    scoring and its re-check share it); the last one only is kept."""
    key = (config.data, config.max_tasks, config.max_grid, config.val_fraction)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = build_data(config)
    return _DATA[key]


class ArcBuild:
    """ARC trials over `space` (see the module docstring)."""

    def __init__(self, space: Space, profile: str, overrides: dict[str, Any] | None,
                 device: str, supervisor: SupervisorConfig) -> None:
        self.space = space
        self.profile = profile
        self.overrides = dict(overrides or {})
        self.device = device
        self.supervisor = supervisor

    def setup(self, trial: optuna.Trial, stream: int) -> TrialSetup:
        params = self.space.suggest(trial)
        config = self.space.config(params, self.profile, self.overrides)
        trainer = arc_trainer(config, self.device, data_for(config), stream)
        return TrialSetup(trainer, config.epochs, config.to_dict(), self.supervisor)

    def recheck(self, winner: FrozenTrial) -> TrialSetup:
        effective = RunConfig.from_dict(winner.user_attrs[TrialAttr.EFFECTIVE_CONFIG])
        train = effective.train.replace(seed=next_seed(effective.train.seed))
        trainer = arc_trainer(train, self.device, data_for(train))
        return TrialSetup(trainer, train.epochs, train.to_dict(), effective.supervisor)
