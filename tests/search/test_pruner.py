"""The timeline pruner (autotune/search/pruner.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune.search import (
    TimelinePruner,
    default_pruner,
    timeline_values,
)
from autotune.search.pruner import CompletedTrials, drawn_finished, has_rollback
from autotune.search.space import parse_space
from autotune.search.vocabulary import TrialAttr
from tests.search.common import add_trial


def test_timeline_pruner_ignores_values_a_rollback_undid() -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(pruner=TimelinePruner(median))
    add_trial(study, {1: 1.0, 2: 0.9, 3: 0.8}, value=0.8)
    # Reported at global epochs 1, 2 (undone by a rollback to epoch 1), 3 (epoch 2 again).
    recovered = add_trial(study, {1: 1.0, 2: 5.0, 3: 0.85}, timeline=[[1, 1], [3, 2]],
                     state=TrialState.RUNNING)
    assert timeline_values(recovered) == {1: 1.0, 2: 0.85}
    # At its second epoch it beats the median (0.9): kept. The bare pruner compares it
    # with epoch 3 of the others (0.8) and prunes it.
    assert not study.pruner.prune(study, recovered)
    assert median.prune(study, recovered)


# -- a trial without a rollback: exactly the wrapped pruner's decision ----------------------

WARNINGS = ("ignore:All-NaN slice:RuntimeWarning", "ignore:Mean of empty slice:RuntimeWarning",
            "ignore:invalid value encountered:RuntimeWarning")
ODD = (math.nan, math.inf, -math.inf)


def _pruners(rng: random.Random) -> list[optuna.pruners.BasePruner]:
    """A median and a percentile pruner with drawn settings (a fresh pair per study)."""
    startup, warmup = rng.randint(0, 3), rng.randint(0, 2)
    interval, n_min = rng.randint(1, 2), rng.randint(1, 2)
    return [optuna.pruners.MedianPruner(startup, warmup, interval, n_min_trials=n_min),
            optuna.pruners.PercentilePruner(rng.uniform(5.0, 95.0), startup, warmup,
                                            interval, n_min_trials=n_min)]


def _values(rng: random.Random, odd: float) -> dict[int, float]:
    """Reports at drawn steps 0-5; each value NaN/inf/-inf with probability `odd`."""
    steps = sorted(rng.sample(range(6), rng.randint(1, 6)))
    return {s: (rng.choice(ODD) if rng.random() < odd else rng.uniform(0.0, 3.0))
            for s in steps}


def _random_study(seed: int) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """Finished trials with NaN/inf among their reports, and a running trial to judge."""
    rng = random.Random(seed)
    study = optuna.create_study(direction=rng.choice(["minimize", "maximize"]))
    for _ in range(rng.randint(0, 8)):
        values = _values(rng, odd=0.3)
        state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED])
        add_trial(study, values, value=rng.uniform(0.0, 3.0), state=state)
    return study, add_trial(study, _values(rng, odd=0.15), state=TrialState.RUNNING)


@pytest.mark.filterwarnings(*WARNINGS)
@pytest.mark.parametrize("kind", ["median", "percentile"])
def test_without_a_rollback_the_wrapper_decides_as_the_wrapped_pruner(kind: str) -> None:
    # 400 seeded studies with NaN, inf and -inf in other trials and in the judged one.
    differ = []
    for seed in range(400):
        study, trial = _random_study(seed)
        pruner = _pruners(random.Random(seed))[kind == "percentile"]
        if TimelinePruner(pruner).prune(study, trial) != pruner.prune(study, trial):
            differ.append(seed)
    assert differ == []


@pytest.mark.filterwarnings(*WARNINGS)
@pytest.mark.parametrize(("others", "mine", "pruned"), [
    ([], {1: math.nan}, False),                              # nothing to compare with
    ([{1: 1.0}], {1: math.nan}, True),                       # NaN at the first step
    ([{1: 1.0}], {1: math.nan, 2: 0.5}, False),              # a NaN, then a good value
    ([{1: math.nan}], {1: 1.0}, False),                      # the median is NaN
    ([{1: math.inf}, {1: 2.0}, {1: 1.0}], {1: 1.5}, False),  # inf in another trial
    ([{1: 1.0}, {1: 1.2}], {1: math.inf}, True),             # inf in the judged trial
])
def test_named_cases_decide_as_the_median_pruner(others: list[dict[int, float]],
                                                  mine: dict[int, float],
                                                  pruned: bool) -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0)
    study = optuna.create_study(pruner=TimelinePruner(median))
    for values in others:
        add_trial(study, values, value=1.0)
    trial = add_trial(study, mine, state=TrialState.RUNNING)
    assert bool(study.pruner.prune(study, trial)) is pruned


@pytest.mark.filterwarnings(*WARNINGS)
def test_a_nan_at_the_first_step_is_pruned_as_by_the_wrapped_pruner() -> None:
    median = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(pruner=TimelinePruner(median))
    add_trial(study, {1: 1.0}, value=1.0)
    nan = add_trial(study, {1: math.nan}, state=TrialState.RUNNING)
    assert study.pruner.prune(study, nan) == median.prune(study, nan)


# -- startup: trials the sampler drew, not queued credit trials ------------------------------

def _credit_trial(study: optuna.Study, of: int, values: dict[int, float]) -> None:
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=values[max(values)],
                                        intermediate_values=values,
                                        user_attrs={TrialAttr.CREDIT_OF: of}))


def _slow_starter(drawn: int, credit: bool) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """`drawn` sampled trials that learned fast (and a credit trial), then a running trial
    whose loss at epoch 2 is above their median."""
    study = optuna.create_study()
    for i in range(drawn):
        add_trial(study, {1: 1.5, 2: 1.0 + i / 100, 3: 0.9}, value=0.9)
    if credit:
        _credit_trial(study, 0, {1: 1.4, 2: 0.9, 3: 0.8})
    return study, add_trial(study, {1: 1.7, 2: 1.6}, state=TrialState.RUNNING)


def test_a_credit_trial_does_not_count_towards_the_startup_trials() -> None:
    # Seeds 16 and 18 of the natural workload: four drawn trials and a credit trial had
    # finished, and the median pruner (startup 5) pruned the sixth, a slow starter, at
    # epoch 2. The same search without recovery would have let it run.
    study, trial = _slow_starter(drawn=4, credit=True)
    assert drawn_finished(study.get_trials()) == 4
    assert not default_pruner().prune(study, trial)
    bare = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
    assert bare.prune(study, trial)               # what Optuna alone decides
    assert not bare.prune(*_slow_starter(drawn=4, credit=False))  # without the credit trial


def test_once_enough_drawn_trials_finished_the_credit_trial_is_a_peer() -> None:
    study, trial = _slow_starter(drawn=5, credit=True)
    assert default_pruner().prune(study, trial)
    # The credit trial's values count in the median like any other finished trial's.
    study = optuna.create_study()
    for v in [1.7, 1.6, 1.5, 1.4, 1.3]:
        add_trial(study, {1: 1.8, 2: v}, value=v)
    late = add_trial(study, {1: 1.8, 2: 1.45}, state=TrialState.RUNNING)
    assert not default_pruner().prune(study, late)  # below the five's median, 1.5: kept
    for _ in range(4):
        _credit_trial(study, 0, {1: 1.0, 2: 0.5})
    assert default_pruner().prune(study, late)      # with four credit trials, the median falls


@pytest.mark.filterwarnings(*WARNINGS)
def test_startup_trials_without_credit_trials_decide_as_the_wrapped_pruner() -> None:
    differ = []
    for seed in range(200):
        study, trial = _random_study(seed)
        pruner = _pruners(random.Random(seed))[0]
        wrapped = TimelinePruner(pruner, startup_trials=pruner._n_startup_trials)
        if wrapped.prune(study, trial) != pruner.prune(study, trial):
            differ.append(seed)
    assert differ == []


def test_startup_trials_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="startup_trials must be 0 or more but got -1"):
        TimelinePruner(optuna.pruners.NopPruner(), startup_trials=-1)


def test_a_timeline_equal_to_the_reports_is_no_rollback() -> None:
    study = optuna.create_study()
    retried = add_trial(study, {1: 1.0, 2: 0.9}, timeline=[[1, 1], [2, 2]],
                   state=TrialState.RUNNING)
    assert not has_rollback(retried)


def test_a_timeline_that_leaves_a_report_out_is_a_rollback() -> None:
    study = optuna.create_study()
    recovered = add_trial(study, {1: 1.0, 2: 5.0}, timeline=[[1, 1]], state=TrialState.RUNNING)
    assert has_rollback(recovered)


class _PruneAll(optuna.pruners.BasePruner):
    """A pruner that prunes every trial at every epoch it is asked about."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_the_pruner_judges_a_trial_at_the_collapse_level(tmp_path: Path) -> None:
    # On the small slice a peak of 0.005 without warmup sits at the colour-frequency level
    # (1.736) from its first epoch. In a search the pruner is asked all the same (a restart
    # costs more than a fresh trial, see autotune/search/objective.py): it stops the trial at once,
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


# -- the complete trials read only when their count moved (a study in SQLite) ---------------

def _sqlite_study(tmp_path: Path) -> optuna.Study:
    from autotune.search.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path}/pruner.db")
    return optuna.create_study(study_name="pruner", storage=storage)


def test_count_trials_counts_a_sqlite_studys_trials_by_state(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    for state in [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
                  TrialState.RUNNING]:
        add_trial(study, {1: 1.0}, value=1.0, state=state)
    backend = study._storage._backend  # type: ignore[attr-defined]  # under Optuna's cache
    assert backend.count_trials(study._study_id, (TrialState.COMPLETE,)) == 2
    assert backend.count_trials(study._study_id, (TrialState.COMPLETE,
                                                  TrialState.PRUNED)) == 3
    assert backend.count_trials(study._study_id, (TrialState.FAIL,)) == 0


def test_complete_trials_are_read_again_only_when_their_count_moved(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    completed = CompletedTrials()
    add_trial(study, {1: 1.0}, value=1.0)
    first = completed.read(study)
    assert [t.number for t in first] == [0]
    add_trial(study, {1: 2.0}, state=TrialState.RUNNING)   # a running trial changes nothing
    add_trial(study, {1: 2.0}, value=None, state=TrialState.PRUNED)
    assert completed.read(study) is first                  # not read again
    # Another process's storage object completes a trial: the count moves, the list follows.
    other = optuna.load_study(study_name="pruner", storage=f"sqlite:///{tmp_path}/pruner.db")
    add_trial(other, {1: 0.5}, value=0.5)
    assert [t.number for t in completed.read(study)] == [0, 3]
    # An in-memory study has no count: read every time, always current.
    memory = optuna.create_study()
    add_trial(memory, {1: 1.0}, value=1.0)
    assert [t.number for t in completed.read(memory)] == [0]
    add_trial(memory, {1: 0.9}, value=0.9)
    assert [t.number for t in completed.read(memory)] == [0, 1]


@pytest.mark.filterwarnings(*WARNINGS)
def test_on_a_sqlite_study_the_pruner_decides_as_on_a_fresh_read(tmp_path: Path) -> None:
    # Trials complete between the epochs of a running one: every decision is the wrapped
    # pruner's on the study read afresh.
    study = _sqlite_study(tmp_path)
    rng = random.Random(7)
    pruner = TimelinePruner(optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    decisions = []
    for _ in range(12):
        values = {s: rng.uniform(0.5, 2.0) for s in range(1, rng.randint(2, 5))}
        running = add_trial(study, values, state=TrialState.RUNNING)
        fresh = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        decisions.append((pruner.prune(study, running), fresh.prune(study, running)))
        add_trial(study, values, value=values[max(values)])
    assert all(ours == theirs for ours, theirs in decisions)
    assert {ours for ours, _ in decisions} == {True, False}  # both decisions were met
