"""Counting trials and the winner (autotune/search/tally.py)."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from autotune.search import (
    tally,
    winner_of,
)
from autotune.search.objective import (
    changes_of,
)


def test_changes_tally_and_winner() -> None:
    events = [{"kind": "diverged", "changes": {}},
              {"kind": "recovered", "changes": {"learning_rate": [9e-3, 3e-3]}},
              {"kind": "recovered", "changes": {"learning_rate": [3e-3, 1e-3],
                                                "label_smoothing": [0.1, 0.0]}}]
    assert changes_of(events) == {"learning_rate": [9e-3, 1e-3], "label_smoothing": [0.1, 0.0]}
    study = optuna.create_study()
    for value, attrs, state in ((0.5, {"stable": True, "divergences": 1}, TrialState.COMPLETE),
                                (0.4, {"stable": False, "divergences": 2,
                                       "status": "gave_up"}, TrialState.PRUNED),
                                (0.7, {"stable": True, "divergences": 0}, TrialState.COMPLETE)):
        study.add_trial(optuna.create_trial(
            state=state, value=value if state == TrialState.COMPLETE else None,
            user_attrs=attrs))
    trials = study.get_trials()
    counts = tally(trials, 5)
    assert (counts.done, counts.diverged, counts.recovered, counts.gave_up) == (3, 2, 1, 1)
    assert counts.best_value == 0.5 and winner_of(trials).number == 0  # type: ignore[union-attr]
