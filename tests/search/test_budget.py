"""`autotune search --budget-epochs N`: epochs of compute, counted from the study
(autotune/search/budget.py, the worker loop and the objective)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autotune import cli
from autotune.search import next_action
from autotune.search.budget import Budget, study_epochs, trial_epochs
from tests.search.common import stored_study


def _finished(name: str) -> list[optuna.trial.FrozenTrial]:
    return [t for t in stored_study(name).get_trials()
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def _run_epochs(trial: optuna.trial.FrozenTrial) -> list[int]:
    path = Path(trial.user_attrs["run_dir"]) / "metrics.jsonl"
    return [json.loads(line)["global_epoch"] for line in path.read_text().splitlines()]


# -- counting -----------------------------------------------------------------------------

def test_counts_each_run_once_in_flight_trials_and_replays() -> None:
    study = optuna.create_study()
    # A finished trial whose run rolled back: reports at global epochs 1, 3, 4 (epoch 2
    # diverged and was replayed), 4 epochs of compute in its attribute.
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0,
                                        intermediate_values={1: 2.0, 3: 1.5, 4: 1.0},
                                        user_attrs={"run_dir": "a", "global_epochs": 4}))
    # Pruned by triage right after a divergence: its last epoch was not reported.
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED,
                                        intermediate_values={1: 2.0},
                                        user_attrs={"run_dir": "b", "global_epochs": 2}))
    # Killed after 2 epochs, and its retry (same run directory) re-reported them and went on.
    study.add_trial(optuna.create_trial(state=TrialState.FAIL,
                                        intermediate_values={1: 2.0, 2: 1.9},
                                        user_attrs={"run_dir": "c"}))
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.1,
                                        intermediate_values={1: 2.0, 2: 1.9, 3: 1.1},
                                        user_attrs={"run_dir": "c", "global_epochs": 3}))
    # A trial in flight counts what it reported so far; a surplus trial trained nothing.
    running = study.ask()
    running.set_user_attr("run_dir", "d")
    running.report(1.8, 1)
    running.report(1.7, 2)
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))
    trials = study.get_trials()
    assert [trial_epochs(t) for t in trials] == [4, 2, 2, 3, 2, 0]
    assert study_epochs(trials) == 4 + 2 + 3 + 2
    assert Budget(11).spent(trials) and not Budget(12).spent(trials)
    assert not Budget(None).spent(trials)
    assert Budget(12).describe(trials) == "11 of 12 epochs trained"


@pytest.mark.parametrize(("finished", "running", "spent", "continuations", "action"), [
    (1, 0, False, 0, "run"),
    (1, 0, True, 0, "stop"),      # the budget binds before --trials
    (1, 1, True, 0, "wait"),      # another worker's trial may die and need continuing
    (1, 0, True, 1, "run"),       # a killed trial still continues its run
    (5, 0, False, 0, "stop"),     # --trials binds before the budget
    (5, 0, True, 1, "stop"),
])
def test_next_action_with_a_budget(finished: int, running: int, spent: bool,
                                   continuations: int, action: str) -> None:
    assert next_action(5, finished, running, budget_spent=spent,
                       continuations=continuations) == action


# -- searches -----------------------------------------------------------------------------

def test_search_stops_at_the_budget_exactly(workdir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    # 2 epochs a trial: after trial 0 the study trained 2 < 3 epochs, after trial 1 4 >= 3.
    assert cli.main(["search", "--trials", "10", "--study", "b", "--space", "space.yaml",
                     "--seed", "0", "--budget-epochs", "3"]) == 0
    out = capsys.readouterr().out
    finished = _finished("b")
    assert [t.number for t in finished] == [0, 1]
    assert [t.user_attrs["global_epochs"] for t in finished] == [2, 2]
    assert study_epochs(stored_study("b").get_trials()) == 4
    assert "2/10 trials finished (epoch budget spent), 4 epochs trained" in out
    assert stored_study("b").user_attrs["autotune_plan"]["budget_epochs"] == 3


def test_replayed_epochs_count(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    # A NaN at the 5th optimizer step of every trial (epoch 2 of 4 steps): the partial
    # epoch, the rollback to epoch 1 and the replay of epoch 2 make 3 epochs of compute a
    # trial. Counted, 2 trials spend the budget of 6; without the replays a third would
    # start.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@5")
    assert cli.main(["search", "--trials", "10", "--study", "r", "--space", "space.yaml",
                     "--seed", "0", "--budget-epochs", "6"]) == 0
    finished = _finished("r")
    assert [t.number for t in finished] == [0, 1]
    assert all(t.user_attrs["recoveries"] == 1 for t in finished)
    assert [t.user_attrs["global_epochs"] for t in finished] == [3, 3]
    assert study_epochs(stored_study("r").get_trials()) == 6
    # The end of the search says what the diverged trials took and where they ended.
    winner = min(finished, key=lambda t: t.value)
    assert (f"diverged trials took 6 of 6 epochs (100%); 2 salvaged, the best of them, "
            f"trial {winner.number} ({winner.value:.4f}), is the winner"
            in " ".join(capsys.readouterr().out.split()))


def test_another_workers_trial_in_flight_counts(workdir: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # A worker elsewhere has trained 3 epochs of its trial and reported them: a worker
    # joining the study with a budget of 3 starts nothing, and waits (that trial may die
    # and need continuing) until its --timeout.
    assert cli.main(["search", "--trials", "5", "--study", "w", "--space", "space.yaml",
                     "--budget-epochs", "3", "--timeout", "0.001"]) == 3
    elsewhere = stored_study("w").ask()
    elsewhere.set_user_attr("worker", {"host": "another-machine", "pid": 1})
    elsewhere.set_user_attr("run_dir", "elsewhere")
    for epoch in (1, 2, 3):
        elsewhere.report(2.0 - epoch / 10, epoch)
    capsys.readouterr()
    assert cli.main(["search", "--study", "w", "--timeout", "2"]) == 3
    trials = stored_study("w").get_trials()
    assert [t.number for t in trials] == [elsewhere.number]  # no trial started here
    assert trials[0].state == TrialState.RUNNING


def test_trials_bind_before_the_budget(workdir: Path) -> None:
    assert cli.main(["search", "--trials", "1", "--study", "t", "--space", "space.yaml",
                     "--budget-epochs", "100"]) == 0
    assert len(_finished("t")) == 1


@pytest.mark.slow
def test_resume_respects_the_budget(workdir: Path) -> None:
    env = {**os.environ, "AUTOTUNE_INJECT": "kill@6"}  # mid-way through trial 0's epoch 2
    killed = subprocess.run([sys.executable, "-m", "autotune", "search", "--trials", "5",
                             "--study", "k", "--space", "space.yaml", "--seed", "1",
                             "--budget-epochs", "3"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert cli.main(["resume", "--study", "k"]) == 0
    # Trial 0 continues its run (epochs 1-2 of compute: 2 < 3), trial 1 starts and ends
    # the budget (4 >= 3); --trials 5 does not bind.
    finished = _finished("k")
    assert len(finished) == 2
    retry = next(t for t in finished if t.user_attrs.get("retry_of") == 0)
    assert _run_epochs(retry) == [1, 2]
    assert study_epochs(stored_study("k").get_trials()) == 4
    assert cli.main(["resume", "--study", "k"]) == 0  # spent: nothing starts
    assert len(_finished("k")) == 2
    # A given --budget-epochs replaces the study's: the study goes on to it.
    assert cli.main(["search", "--study", "k", "--budget-epochs", "5"]) == 0
    assert len(_finished("k")) == 3
    assert study_epochs(stored_study("k").get_trials()) == 6


@pytest.mark.parametrize("value", ["0", "-3", "1.5", "many", ""])
def test_bad_budget_is_exit_2_and_writes_nothing(workdir: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 value: str) -> None:
    assert cli.main(["search", "--trials", "2", "--space", "space.yaml",
                     "--budget-epochs", value]) == 2
    err = capsys.readouterr().err
    assert "--budget-epochs" in err
    assert not Path("studies").exists()
