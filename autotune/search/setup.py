"""What a trial trains: a build samples the trial's parameters and makes its trainer.

The objective (`autotune.search.objective`) runs every trial the same way, whatever the
trainer: it asks its build for a `TrialSetup` (a fresh `Trainable`, the epochs, the
configuration config.yaml records, the supervisor's settings), then supervises it in the
trial's run directory. A build is the ARC trainer over a space (`autotune.search.arc`), a
user's `build(trial)` (`autotune.objective`), or a user's `FACTORY(hparams)` over a space
(`autotune search --trainer`, `autotune.search.factory`). `recheck` makes the trainer of
the winner's re-check: its effective configuration from scratch, with another seed where
the configuration has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FixedTrial, FrozenTrial

from autotune.errors import ConfigError
from autotune.jsonio import jsonable
from autotune.recovery.faults import with_faults
from autotune.recovery.settings import SupervisorConfig
from autotune.recovery.trainable import Trainable
from autotune.search.space import Choice, Param, Range, Space
from autotune.search.vocabulary import TrialAttr

__all__ = ["SEARCH_ALARM_ONLY", "Build", "OwnBuild", "TrialBuild", "TrialSetup",
           "check_trainable", "next_seed", "search_supervisor", "space_of"]

SEARCH_ALARM_ONLY = ("overfitting",)
"""The reasons a search's trials only record as alarms (`SupervisorConfig.alarm_only`): a
trial's value is its best validation loss, which overfitting does not take away, and
acting on it (a rollback, weight decay, then a rate cut) made trials worse more often
than better at equal epochs (BENCHMARKS.md, ninth and tenth sessions)."""

Build = Callable[[Any], Trainable]
"""A user's `build(trial)`: samples with `trial.suggest_*`, returns a Trainable."""


@dataclass
class TrialSetup:
    """What one trial (or a re-check) trains."""

    trainer: Trainable
    epochs: int
    config: dict[str, Any]
    """config.yaml's trainer half (the supervisor's settings are added to it)."""
    supervisor: SupervisorConfig


def search_supervisor(recovery: Any, max_recoveries: int) -> SupervisorConfig:
    """The supervisor's settings of a search's trials."""
    return SupervisorConfig(recovery=recovery, max_recoveries=max_recoveries,
                            alarm_only=SEARCH_ALARM_ONLY)


class TrialBuild(Protocol):
    """Makes the trainers of a study's trials and of its winner's re-check."""

    def setup(self, trial: optuna.Trial, stream: int) -> TrialSetup:
        """Sample the trial's parameters and make its trainer; `stream` is its stream of
        `AUTOTUNE_INJECT` rate faults."""
        ...

    def recheck(self, winner: FrozenTrial) -> TrialSetup:
        """The winner's effective configuration, fresh, with another seed."""
        ...


def next_seed(seed: Any) -> Any:
    """The seed of a re-check: another one, in the range every generator takes."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        return seed
    return (seed + 1) % (2**31 - 1)


def check_trainable(obj: object, what: str) -> Trainable:
    """`obj`, or ConfigError naming `what` when it is not an `autotune.Trainable`."""
    if not isinstance(obj, Trainable):
        members = [m for m in vars(Trainable) if not m.startswith("_")]  # the protocol's
        missing = [m for m in members if not hasattr(obj, m)]
        raise ConfigError(f"{what} returned {type(obj).__name__}, which is not an "
                          f"autotune.Trainable (missing {', '.join(missing)}).")
    return obj


def _param(key: str, distribution: BaseDistribution) -> Param | None:
    if isinstance(distribution, FloatDistribution):
        return Range(key, distribution.low, distribution.high, distribution.log,
                     distribution.step)
    if isinstance(distribution, IntDistribution):
        return Range(key, distribution.low, distribution.high, distribution.log,
                     None if distribution.step == 1 else distribution.step, integer=True)
    if isinstance(distribution, CategoricalDistribution):
        return Choice(key, tuple(distribution.choices))
    return None


def space_of(distributions: Mapping[str, BaseDistribution]) -> Space:
    """The space a trial sampled from, as autotune's `Space` (its credit is judged in it)."""
    params = [p for k, d in distributions.items() if (p := _param(k, d)) is not None]
    return Space(tuple(params), {}, "<trial>")


class OwnBuild:
    """A user's trainer: `build(trial)` with `trial.suggest_*` (`autotune.objective`).

    A trial's configuration is its sampled parameters, the trainer's `hparams` and its
    epochs: the `epochs` parameter when the trial has one, else `epochs`.
    """

    def __init__(self, build: Build, epochs: int, supervisor: SupervisorConfig,
                 name: str = "build") -> None:
        self.build = build
        self.epochs = int(epochs)
        self.supervisor = supervisor
        self.name = name

    def make(self, trial: Any) -> Trainable:
        """The trainer of `trial` (an optuna.Trial, or a FixedTrial of a re-check)."""
        return check_trainable(self.build(trial), f"{self.name}(trial)")

    def args(self, trial: Any) -> dict[str, Any]:
        """The trial's configuration before the trainer's own values: its parameters."""
        return dict(trial.params)

    def _setup(self, trainer: Trainable, args: Mapping[str, Any], stream: int) -> TrialSetup:
        epochs = int(args.get("epochs", self.epochs))
        config = {**jsonable(dict(args)), **jsonable(dict(trainer.hparams)), "epochs": epochs}
        return TrialSetup(with_faults(trainer, stream), epochs, config, self.supervisor)

    def setup(self, trial: optuna.Trial, stream: int) -> TrialSetup:
        trainer = self.make(trial)
        return self._setup(trainer, self.args(trial), stream)

    def fixed(self, args: dict[str, Any]) -> Trainable:
        """The trainer of a configuration given in full (a re-check)."""
        return self.make(FixedTrial(args))

    def recheck(self, winner: FrozenTrial) -> TrialSetup:
        effective = dict(winner.user_attrs[TrialAttr.EFFECTIVE_CONFIG])
        args = {k: effective.get(k, v) for k, v in self.args(winner).items()}
        if "seed" in args:
            args["seed"] = next_seed(args["seed"])
        trainer = self.fixed(args)
        changed = {k: effective[k] for k, v in trainer.hparams.items()
                   if k in effective and effective[k] != v}
        if changed:  # what recovery changed that is not a parameter of the build
            trainer.apply_changes(changed)
        return self._setup(trainer, args, stream=0)
