"""The sampler: Optuna's TPE, also told what the configurations recovery tamed achieved.

A trial that collapsed and was restarted from its initial weights with a lower learning
rate (`objective.restarted_from_scratch`) ends with two facts in it: its *sampled*
configuration diverged (its `diverged` constraint, which TPE ranks below every feasible
trial), and its *effective* configuration, trained from scratch, reached the trial's value.
Spending a trial slot to re-train the effective configuration would reproduce that value
to the last digit (same seed, same data order), so the objective records the effective
parameters in the trial's `credit` attribute instead (`stand_in: true`), and this sampler
shows TPE, beside the real trials, one stand-in trial per such record: the effective
parameters, the trial's value, feasible. The stand-ins live only in what the sampler
reads; the study's trials, counts, exports and reports are the real ones.

TPE reads a study's trials through `Study._get_trials` (Optuna 4-5); the view below
(`autotune.search.views.StudyView`) answers that call and the public `get_trials`, and passes
everything else through, as the pruner's view in `autotune.search.pruner` does. Stand-ins count
towards TPE's `n_startup_trials` (they are finished evaluations, which is what it counts).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.trial import FrozenTrial, TrialState

from autotune.search.views import StudyView

__all__ = ["CreditTPESampler", "stand_in", "stand_ins"]


def stand_in(trial: FrozenTrial) -> FrozenTrial | None:
    """The trial TPE should also see for `trial`: its effective parameters and its value, or
    None when its `credit` attribute asks for none (or they do not fit its distributions)."""
    credit = trial.user_attrs.get("credit")
    if (trial.state != TrialState.COMPLETE or trial.value is None
            or not isinstance(credit, dict) or not credit.get("stand_in")):
        return None
    params = credit.get("params")
    if not isinstance(params, dict) or set(params) != set(trial.distributions):
        return None
    try:
        seen = optuna.trial.create_trial(params=params, distributions=trial.distributions,
                                         value=trial.value,
                                         user_attrs={"stand_in_for": trial.number})
    except ValueError:  # a value outside its distribution: the space changed under it
        return None
    seen.number = trial.number
    return seen


def stand_ins(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The stand-in trials of `trials`, in trial order."""
    return [s for s in map(stand_in, trials) if s is not None]


class _CreditView(StudyView):
    """A study whose trial lists carry the stand-ins (what the wrapped TPE reads)."""

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        if states is not None and TrialState.COMPLETE not in states:
            return trials
        return trials + stand_ins(trials)


class CreditTPESampler(TPESampler):
    """TPE that also learns from the stand-ins of the trials recovery restarted (module
    docstring); everything else is TPESampler's."""

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return super().infer_relative_search_space(_CreditView(study), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return super().sample_relative(_CreditView(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return super().sample_independent(_CreditView(study), trial, param_name,  # type: ignore[arg-type]
                                          param_distribution)
