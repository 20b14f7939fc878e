"""The timeline pruner (autotune/search/pruner.py)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.search import (
    TimelinePruner,
    timeline_values,
)
from autotune.search.objective import (
    TIMELINE,
)
from autotune.search.space import parse_space


def _add(study: optuna.Study, values: dict[int, float], *, value: float | None = None,
         timeline: list[list[int]] | None = None,
         state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs = {TIMELINE: timeline} if timeline is not None else {}
    trial = optuna.create_trial(state=state, value=value if state == TrialState.COMPLETE
                                else None, intermediate_values=values, user_attrs=attrs)
    study.add_trial(trial)
    return study.get_trials()[-1]


def test_timeline_pruner_ignores_values_a_rollback_undid() -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(pruner=TimelinePruner(median))
    _add(study, {1: 1.0, 2: 0.9, 3: 0.8}, value=0.8)
    # Reported at global epochs 1, 2 (undone by a rollback to epoch 1), 3 (epoch 2 again).
    recovered = _add(study, {1: 1.0, 2: 5.0, 3: 0.85}, timeline=[[1, 1], [3, 2]],
                     state=TrialState.RUNNING)
    assert timeline_values(recovered) == {1: 1.0, 2: 0.85}
    # At its second epoch it beats the median (0.9): kept. The bare pruner compares it
    # with epoch 3 of the others (0.8) and prunes it.
    assert not study.pruner.prune(study, recovered)
    assert median.prune(study, recovered)


@pytest.mark.filterwarnings("ignore:All-NaN slice:RuntimeWarning")
def test_timeline_pruner_never_prunes_on_nan_only() -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(pruner=TimelinePruner(median))
    _add(study, {1: 1.0}, value=1.0)
    nan = _add(study, {1: math.nan}, state=TrialState.RUNNING)
    assert median.prune(study, nan) and not study.pruner.prune(study, nan)


class _PruneAll(optuna.pruners.BasePruner):
    """A pruner that prunes every trial at every epoch it is asked about."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_the_pruner_judges_a_trial_at_the_collapse_level(tmp_path: Path) -> None:
    # On the small slice a peak of 0.005 without warmup sits at the colour-frequency level
    # (1.736) from its first epoch. In a search the pruner is asked all the same (a restart
    # costs more than a fresh trial, see autotune/objective.py): it stops the trial at once,
    # before the collapse detector would have called it.
    from autotune.search.objective import Objective, ObjectiveSettings
    space = parse_space({"learning_rate": {"choices": [0.005]}, "warmup_epochs": 0.0,
                         "epochs": 6, "max_tasks": 40})
    study = optuna.create_study(pruner=_PruneAll())
    objective = Objective(ObjectiveSettings(space, "tiny", tmp_path, device="cpu"))
    study.optimize(objective, n_trials=1)
    [trial] = study.trials
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1]
    assert trial.user_attrs["events"] == [] and trial.user_attrs["divergences"] == 0
    assert "pruned by the pruner at epoch 1" in trial.user_attrs["pruned_reason"]
