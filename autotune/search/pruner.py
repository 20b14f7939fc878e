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

__all__ = ["CompletedTrials", "TimelinePruner", "default_pruner", "drawn_finished", "has_rollback",
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


class CompletedTrials:
    """A study's COMPLETE trials, read again only when their count changed.

    Optuna's median pruner reads the study's complete trials at every epoch, and a read of
    a study in an RDB storage reloads every running trial with it (its parameters, reports
    and attributes): about 6 ms a read on the 2-core development machine, a fifth of what a
    search on the default no-regret workload spends outside training (BENCHMARKS.md,
    "Thirteenth session"). A finished trial never changes (Optuna's storages refuse an
    update to it) and a complete one stays complete, so the same count is the same trials:
    where the storage can count them in one query (`RetryingRDBStorage.count_trials`, under
    Optuna's cache), the trials are read only when the count moved; any other storage is
    read every time (an in-memory study's read costs nothing).
    """

    def __init__(self) -> None:
        # (storage, study id, its complete trials), replaced whole: threads may share it.
        self._held: tuple[object, int, list[FrozenTrial]] | None = None

    def read(self, study: optuna.Study) -> list[FrozenTrial]:
        storage = getattr(study, "_storage", None)
        backend = getattr(storage, "_backend", storage)
        count = getattr(backend, "count_trials", None)
        study_id = getattr(study, "_study_id", None)
        if count is None or study_id is None:
            return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        held = self._held
        if held is not None and held[0] is backend and held[1] == study_id and \
                count(study_id, (TrialState.COMPLETE,)) == len(held[2]):
            return held[2]
        # A trial that completes between a count and this read is in the list read, and
        # the next count matches it.
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self._held = (backend, study_id, trials)
        return trials


class _TimelineView(StudyView):
    """A study whose trials show their timeline values (what a wrapped pruner reads); its
    complete trials are `completed` (read by the caller)."""

    def __init__(self, study: optuna.Study, completed: list[FrozenTrial]) -> None:
        super().__init__(study)
        self._completed = completed

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        return [_view(t) for t in trials]

    def get_trials(self, deepcopy: bool = True,
                   states: Collection[TrialState] | None = None) -> list[FrozenTrial]:
        if states is None or set(states) != {TrialState.COMPLETE}:
            return super().get_trials(deepcopy, states)
        shown = self.shown(self._completed, states)
        return copy.deepcopy(shown) if deepcopy else shown


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
        self._completed = CompletedTrials()

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        completed = self._completed.read(study)
        # A StudyView answers what a pruner reads of a Study; Optuna types it as a Study.
        view = _TimelineView(study, completed)
        if not self._wrapped.prune(view, _view(trial)):  # type: ignore[arg-type]
            return False
        return not self._startup_trials or drawn_finished(completed) >= self._startup_trials


def default_pruner() -> BasePruner:
    """The median pruner after `PRUNER_STARTUP_TRIALS` finished trials the sampler drew and
    `PRUNER_WARMUP_EPOCHS` epochs, on timelines."""
    return TimelinePruner(MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS,
                                       n_warmup_steps=PRUNER_WARMUP_EPOCHS),
                          startup_trials=PRUNER_STARTUP_TRIALS)
