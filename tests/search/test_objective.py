"""The objective's decisions: surplus trials (autotune/search/objective.py)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from autotune.search.objective import is_surplus
from tests.search.common import add_trial


def test_surplus_is_decided_by_trial_number() -> None:
    study = optuna.create_study()
    add_trial(study, {}, value=1.0)
    add_trial(study, {}, state=TrialState.FAIL)
    add_trial(study, {}, state=TrialState.RUNNING)
    add_trial(study, {}, state=TrialState.RUNNING)
    trials = study.get_trials()
    assert not is_surplus(trials, 2, 2)   # holders before it: trial 0 (1 is FAIL)
    assert is_surplus(trials, 3, 2)       # trials 0 and 2 hold both slots
