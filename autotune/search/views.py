"""A study seen through a filter: what a wrapped Optuna sampler or pruner reads.

Optuna's samplers and pruners read a study's trials through `Study.get_trials` and the
private `Study._get_trials` (TPE, Optuna 4-5). A `StudyView` answers both (and `trials`)
with the study's trials passed through `shown`, and passes everything else through to the
study. `autotune.search.pruner.TimelinePruner` shows each trial's surviving timeline;
`autotune.search.sampler.CreditTPESampler` marks the divergences of the sampled
configurations and adds the stand-ins of restarted trials.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["StudyView"]


class StudyView:
    """A study whose trial lists are the study's passed through `shown`."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        """What to show for `trials` (read with `states`); the base shows them as they are."""
        return trials

    def _get_trials(self, deepcopy: bool = True, states: Collection[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        states = tuple(states) if states is not None else None
        return self.shown(self._study._get_trials(deepcopy=deepcopy, states=states,
                                                  use_cache=use_cache), states)

    def get_trials(self, deepcopy: bool = True,
                   states: Collection[TrialState] | None = None) -> list[FrozenTrial]:
        states = tuple(states) if states is not None else None
        return self.shown(self._study.get_trials(deepcopy=deepcopy, states=states), states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)
