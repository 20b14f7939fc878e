"""The pruner: Optuna's median pruner, judging each trial on its surviving timeline."""

from __future__ import annotations

import copy
import math
from collections.abc import Collection

import optuna
from optuna.pruners import BasePruner, MedianPruner
from optuna.trial import FrozenTrial, TrialState

from autotune.search.objective import (
    TIMELINE,
)
from autotune.search.views import StudyView

# -- pruning ------------------------------------------------------------------------------

def timeline_values(trial: FrozenTrial) -> dict[int, float]:
    """A trial's finite reported values on its surviving timeline, keyed by logical epoch.

    Reports are at global epochs (they never go back); a rollback makes some of them stale.
    Trials without the `timeline` attribute (not ours) keep their values as reported.
    """
    values = trial.intermediate_values
    pairs = trial.user_attrs.get(TIMELINE)
    if not isinstance(pairs, list):
        return {s: v for s, v in values.items() if math.isfinite(v)}
    out: dict[int, float] = {}
    for global_epoch, epoch in pairs:
        value = values.get(int(global_epoch))
        if value is not None and math.isfinite(value):
            out[int(epoch)] = value
    return out


def _view(trial: FrozenTrial) -> FrozenTrial:
    seen = copy.copy(trial)
    seen.intermediate_values = timeline_values(trial)
    return seen


class _TimelineView(StudyView):
    """A study whose trials show their timeline values (what a wrapped pruner reads)."""

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        return [_view(t) for t in trials]


class TimelinePruner(BasePruner):
    """Wraps a pruner so it judges trials on their surviving timelines.

    Each trial is seen with the values of epochs a rollback undid removed, NaN and
    infinite values removed, and keyed by logical epoch, so a recovered trial is compared
    with the others at the same amount of training of its surviving model. A trial with no
    finite value is never pruned here (divergence is the supervisor's business).
    """

    def __init__(self, wrapped: BasePruner) -> None:
        if not isinstance(wrapped, BasePruner):
            raise TypeError(f"wrapped must be a BasePruner but got {type(wrapped).__name__}.")
        self._wrapped = wrapped

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        seen = _view(trial)
        if seen.last_step is None:
            return False
        return self._wrapped.prune(_TimelineView(study), seen)  # type: ignore[arg-type]


def default_pruner() -> BasePruner:
    """The median pruner after 5 finished trials and 2 epochs, on timelines."""
    return TimelinePruner(MedianPruner(n_startup_trials=5, n_warmup_steps=2))
