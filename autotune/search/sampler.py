"""The sampler: Optuna's TPE, told what the sampled configurations did and what the
configurations recovery tamed achieved.

Two readers, two signals. The study stores what a trial's *outcome* was: its `diverged`
constraint is 0 for a trial that ended stable, its divergences otherwise, so a salvaged
trial (it diverged, recovery mended it, it ended stable) is feasible, and
`optuna.load_study(...).best_trial`, like every tool built on Optuna, names the same
winner as autotune (`tally.winner_of`: the best stable trial). TPE needs the *sampled
configuration's* fate: what it sees of a trial that diverged is that trial with the
constraint `diverged` = its number of divergences (the `divergences` user attribute),
which TPE ranks below every feasible trial, so it learns that the sampled point diverged
although the stored trial is feasible. A divergence that recovery put down to its batch (a
NaN out of a steady stretch: the batch skipped, nothing else changed,
`autotune.recovery.policy`) does not count: the configuration ran on as sampled, and
marking it would teach TPE that a region diverges because of one bad batch
(`batch_skips`; docs/decisions.md). What TPE sees, by trial kind
(`tests/search/test_sampler.py` holds the table):

| trial | stored state, constraint | TPE sees |
| --- | --- | --- |
| clean | COMPLETE, 0 | COMPLETE, feasible |
| salvaged | COMPLETE, 0 | COMPLETE, infeasible (divergences); after a restart, a stand-in |
| salvaged, each divergence put down to its batch | COMPLETE, 0 | COMPLETE, feasible |
| given up | PRUNED, divergences | PRUNED, infeasible (divergences) |
| pruned | PRUNED, 0 | PRUNED, feasible |

A trial that collapsed and was restarted from its initial weights with a lower learning
rate (`objective.restarted_from_scratch`) ends with two facts in it: its *sampled*
configuration diverged, and its *effective* configuration, trained from scratch, reached
the trial's value. Spending a trial slot to re-train the effective configuration would
reproduce that value to the last digit (same seed, same data order), so the objective
records the effective parameters in the trial's `credit` attribute instead (`stand_in:
true`), and this sampler shows TPE, beside the real trials, one stand-in trial per such
record: the effective parameters, the trial's value, feasible. The stand-ins and the
constraints TPE sees live only in what the sampler reads; the study's trials, counts,
exports and reports are the real ones.

TPE reads a study's trials through `Study._get_trials` (Optuna 4-5); the view below
(`autotune.search.views.StudyView`) answers that call and the public `get_trials`, and passes
everything else through, as the pruner's view in `autotune.search.pruner` does. Stand-ins count
towards TPE's `n_startup_trials` (they are finished evaluations, which is what it counts).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from autotune.search.views import StudyView
from autotune.search.vocabulary import SystemAttr, TrialAttr

__all__ = ["CreditSampler", "CreditTPESampler", "sampled_view", "stand_in", "stand_ins"]



def sampled_view(trial: FrozenTrial) -> FrozenTrial:
    """The trial as TPE sees it: a finished trial that diverged carries the constraint
    `diverged` = its number of divergences (the sampled configuration's failure), whatever
    the stored constraint says, less those recovery put down to their batch (`batch_skips`:
    the configuration ran on unchanged); any other trial is shown as it is."""
    divergences = trial.user_attrs.get(TrialAttr.DIVERGENCES)
    if (trial.state not in (TrialState.COMPLETE, TrialState.PRUNED)
            or not isinstance(divergences, (int, float)) or divergences <= 0):
        return trial
    skips = trial.user_attrs.get(TrialAttr.BATCH_SKIPS, 0)
    blamed = divergences - (skips if isinstance(skips, (int, float)) else 0)
    seen = copy.copy(trial)
    seen.system_attrs = {**trial.system_attrs, SystemAttr.CONSTRAINT: float(max(0, blamed))}
    return seen


def stand_in(trial: FrozenTrial) -> FrozenTrial | None:
    """The trial TPE should also see for `trial`: its effective parameters and its value, or
    None when its `credit` attribute asks for none (or they do not fit its distributions)."""
    credit = trial.user_attrs.get(TrialAttr.CREDIT)
    if (trial.state != TrialState.COMPLETE or trial.value is None
            or not isinstance(credit, dict) or not credit.get("stand_in")):
        return None
    params = credit.get("params")
    if not isinstance(params, dict) or set(params) != set(trial.distributions):
        return None
    try:
        seen = optuna.trial.create_trial(params=params, distributions=trial.distributions,
                                         value=trial.value,
                                         user_attrs={TrialAttr.STAND_IN_FOR: trial.number})
    except ValueError:  # a value outside its distribution: the space changed under it
        return None
    seen.number = trial.number
    return seen


def stand_ins(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The stand-in trials of `trials`, in trial order."""
    return [s for s in map(stand_in, trials) if s is not None]


class _CreditView(StudyView):
    """A study whose trials carry the sampled configurations' divergences, and whose lists
    carry the stand-ins (what the wrapped TPE reads)."""

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        seen = [sampled_view(t) for t in trials]
        if states is not None and TrialState.COMPLETE not in states:
            return seen
        return seen + stand_ins(trials)


class CreditTPESampler(TPESampler):
    """TPE that also learns from the stand-ins of the trials recovery restarted (module
    docstring); everything else is TPESampler's. (The `type: ignore[arg-type]`s: a
    StudyView answers what TPE reads of a Study; Optuna types the argument as a Study.)"""

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


class CreditSampler(BaseSampler):
    """Any Optuna sampler, shown the same study as `CreditTPESampler`'s TPE (the sampled
    configurations' divergences, the stand-ins): `autotune.create_study` wraps the given
    sampler in it."""

    def __init__(self, wrapped: BaseSampler) -> None:
        if not isinstance(wrapped, BaseSampler):
            raise TypeError(f"wrapped must be a BaseSampler but got {type(wrapped).__name__}.")
        self.wrapped = wrapped

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.wrapped.infer_relative_search_space(_CreditView(study), trial)  # type: ignore[arg-type]

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.wrapped.sample_relative(_CreditView(study), trial, search_space)  # type: ignore[arg-type]

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.wrapped.sample_independent(_CreditView(study), trial, param_name,  # type: ignore[arg-type]
                                               param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.wrapped.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.wrapped.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.wrapped.reseed_rng()
