"""The pruner: Optuna's median pruner, judging each trial on its surviving timeline."""

from __future__ import annotations

import copy
from collections.abc import Collection

import optuna
from optuna.pruners import BasePruner, MedianPruner
from optuna.trial import FrozenTrial, TrialState

from autotune.search.timeline import has_rollback, timeline_values
from autotune.search.views import StudyView
from autotune.search.vocabulary import PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_EPOCHS, TrialAttr

__all__ = ["TimelinePruner", "default_pruner", "drawn_finished", "has_rollback",
           "timeline_values"]


def _view(trial: FrozenTrial) -> FrozenTrial:
    """The trial as the wrapped pruner sees it: itself, or a copy keyed by logical epoch."""
    if not has_rollback(trial):
        return trial
    seen = copy.copy(trial)
    seen.intermediate_values = timeline_values(trial)
    return seen


def drawn_finished(trials: Collection[FrozenTrial]) -> int:
    """How many trials finished that the sampler drew: a queued credit trial re-runs a
    configuration the search has already tried, and is not counted."""
    return sum(1 for t in trials if t.state == TrialState.COMPLETE
               and TrialAttr.CREDIT_OF not in t.user_attrs)


class _TimelineView(StudyView):
    """A study whose trials show their timeline values (what a wrapped pruner reads)."""

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        return [_view(t) for t in trials]


class TimelinePruner(BasePruner):
    """Wraps a pruner so it judges trials on their surviving timelines.

    A trial with a rollback is seen without the values of epochs the rollback undid, keyed
    by logical epoch, so a recovered trial is compared with the others at the same amount
    of training of its surviving model. Every other trial is shown as it is: for a trial
    without a rollback in a study without rollbacks, the decision is the wrapped pruner's,
    whatever the trials reported (NaN and inf included; a NaN makes Optuna's median pruner
    prune, as it would without the wrapper). NaN never reaches the pruner from autotune's
    own trials: the objective reports finite values only, and a divergence is the
    supervisor's business.

    `startup_trials` holds pruning back until that many trials the sampler drew have
    finished (`drawn_finished`). Optuna's median pruner counts every finished trial, so a
    credit trial queued early would start pruning one sampled trial sooner than in the
    same search without recovery, and prune the slow starters the user's startup trials
    were meant to let through (the natural workload, seeds 16 and 18 of BENCHMARKS.md's
    eighth session). 0 (the default for a pruner the user passes) leaves that to the
    wrapped pruner.
    """

    def __init__(self, wrapped: BasePruner, startup_trials: int = 0) -> None:
        if not isinstance(wrapped, BasePruner):
            raise TypeError(f"wrapped must be a BasePruner but got {type(wrapped).__name__}.")
        if startup_trials < 0:
            raise ValueError(f"startup_trials must be 0 or more but got {startup_trials}.")
        self._wrapped = wrapped
        self._startup_trials = startup_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        # A StudyView answers what a pruner reads of a Study; Optuna types it as a Study.
        if not self._wrapped.prune(_TimelineView(study), _view(trial)):  # type: ignore[arg-type]
            return False
        # Read the study again only for the rare epoch the wrapped pruner would prune at.
        return not self._startup_trials or drawn_finished(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) \
            >= self._startup_trials


def default_pruner() -> BasePruner:
    """The median pruner after `PRUNER_STARTUP_TRIALS` finished trials the sampler drew and
    `PRUNER_WARMUP_EPOCHS` epochs, on timelines."""
    return TimelinePruner(MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS),
                          startup_trials=PRUNER_STARTUP_TRIALS)
