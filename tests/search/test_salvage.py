"""What the diverged trials cost a search and what recovery salvaged
(autotune/search/salvage.py)."""

from __future__ import annotations

from typing import Any

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from autotune.search.salvage import salvage_of

LR = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}


def _trial(number: int, value: float | None, epochs: int, *, divergences: int = 0,
           stable: bool = True, state: TrialState = TrialState.COMPLETE,
           run_dir: str | None = None) -> FrozenTrial:
    attrs: dict[str, Any] = {"stable": stable, "global_epochs": epochs,
                             "divergences": divergences}
    if run_dir:
        attrs["run_dir"] = run_dir
    t = create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                     params={"learning_rate": 1e-3}, distributions=LR, user_attrs=attrs)
    t.number = number
    return t


def test_a_salvaged_trial_behind_the_winner_says_so_with_its_cost() -> None:
    trials = [_trial(0, 1.05, 48), _trial(1, 1.30, 60, divergences=1),
              _trial(2, 1.25, 57, divergences=2), _trial(3, None, 20, divergences=1,
                                                          stable=False,
                                                          state=TrialState.PRUNED)]
    s = salvage_of(trials)
    assert (s.diverged, s.diverged_epochs, s.epochs, s.salvaged) == (3, 137, 185, 2)
    assert (s.best_trial, s.best_value, s.winner_trial) == (2, 1.25, 0)
    assert not s.salvaged_the_winner
    assert s.describe() == ("diverged trials took 137 of 185 epochs (74%); 2 salvaged, the "
                            "best of them, trial 2 (1.2500), is not the winner (1.0500)")


def test_a_salvaged_winner_and_a_search_that_salvaged_nothing() -> None:
    won = salvage_of([_trial(0, 1.10, 10), _trial(1, 1.00, 12, divergences=1)])
    assert won.salvaged_the_winner
    assert won.describe().endswith("1 salvaged, the best of them, trial 1 (1.0000), is the "
                                   "winner")
    # --recovery off: the diverged trial was pruned at its alarm; the running one not counted.
    off = salvage_of([_trial(0, 1.10, 10), _trial(1, None, 4, divergences=1, stable=False,
                                                  state=TrialState.PRUNED),
                      _trial(2, None, 3, state=TrialState.RUNNING)])
    assert (off.diverged, off.diverged_epochs, off.salvaged, off.best_trial) == (1, 4, 0, None)
    assert off.describe() == "diverged trials took 4 of 17 epochs (24%); none was salvaged"
    assert salvage_of([_trial(0, 1.1, 10)]).diverged == 0


def test_a_run_continued_by_another_trial_counts_once() -> None:
    # A killed trial retried from its checkpoint: both trials carry the same run directory.
    trials = [_trial(0, None, 6, divergences=1, stable=False, state=TrialState.FAIL,
                     run_dir="runs/a"),
              _trial(1, 1.2, 10, divergences=1, run_dir="runs/a")]
    s = salvage_of(trials)
    assert (s.diverged, s.diverged_epochs, s.epochs, s.salvaged) == (1, 10, 10, 1)
