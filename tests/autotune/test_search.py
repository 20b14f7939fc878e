"""The search end to end (tiny profile, few tasks, SQLite in a temporary folder), and the
pure decisions behind it on real in-memory studies."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from autotune import cli
from autotune.search import (
    TimelinePruner,
    next_action,
    reap,
    tally,
    timeline_values,
    winner_of,
)
from autotune.search.objective import (
    TIMELINE,
    changes_of,
    credit_params,
    deserves_credit,
    is_surplus,
    restarted_from_scratch,
)
from autotune.search.space import parse_space

STORAGE = "sqlite:///studies/autotune.db"
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "label_smoothing": {"choices": [0.0, 0.1]},
         "epochs": 2, "max_tasks": 40}  # 4 optimizer steps an epoch


def _main(argv: list[str]) -> int:
    return cli.main(argv)


def _study(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=STORAGE)


def test_search_recovers_a_nan_trial_exports_and_reports(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trial 0 gets a NaN loss at its 6th step; two clean trials join the same study.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@5")
    assert _main(["search", "--trials", "1", "--study", "s", "--space", "space.yaml",
                  "--seed", "3"]) == 0
    monkeypatch.delenv("AUTOTUNE_INJECT")
    assert _main(["search", "--trials", "3", "--study", "s"]) == 0

    study = _study("s")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert study.user_attrs["autotune_plan"]["trials"] == 3
    assert isinstance(study.user_attrs["confirmed"], bool)
    first = trials[0]
    attrs = first.user_attrs
    assert attrs["divergences"] >= 1 and attrs["recoveries"] >= 1 and attrs["stable"]
    assert attrs["events"][0]["kind"] == "diverged"
    assert attrs["events"][0]["reason"] == "nonfinite_loss"
    effective = attrs["effective_config"]
    changed = {k for k in first.params if effective[k] != first.params[k]}
    assert changed and set(attrs["changes"]) >= changed  # sampled params stay as sampled
    assert first.constraints == {"diverged": float(attrs["divergences"])}
    assert all(t.constraints == {"diverged": 0.0} for t in trials[1:])
    # Reports at epochs of compute: the partial epoch that diverged counts, nothing lost.
    assert sorted(first.intermediate_values) == [1, 3]
    assert attrs[TIMELINE] == [[1, 1], [3, 2]]  # written once the rollback happened
    assert Path(attrs["run_dir"], "metrics.jsonl").is_file()

    # export yaml round trip through `train --config`
    assert _main(["export", "--study", "s", "--format", "yaml", "--output", "best.yaml"]) == 0
    text = Path("best.yaml").read_text()
    assert text.startswith("# autotune: winner of study 's'")
    best = winner_of(trials)
    assert best is not None and yaml.safe_load(text) == best.user_attrs["effective_config"]
    assert _main(["train", "--config", "best.yaml", "--epochs", "1", "--run-dir", "w"]) == 0

    # csv: one row per trial with our columns
    assert _main(["export", "--study", "s", "--format", "csv", "--output", "t.csv"]) == 0
    frame = pd.read_csv("t.csv")
    for column in ("number", "state", "value", "duration_s", "param_learning_rate",
                   "param_label_smoothing", "effective_learning_rate", "recoveries",
                   "diverged", "stable"):
        assert column in frame.columns
    assert list(frame["number"]) == [0, 1, 2] and set(frame["state"]) == {"COMPLETE"}
    row = frame.iloc[0]
    assert bool(row["diverged"]) and row["recoveries"] >= 1 and bool(row["stable"])
    assert not math.isclose(row["param_learning_rate"], row["effective_learning_rate"]) or \
        row["param_label_smoothing"] != row["effective_label_smoothing"]

    assert _main(["report", "--study", "s", "--out", "rep"]) == 0
    for name in ("history.png", "curves.png"):
        assert (Path("rep") / name).stat().st_size > 1000

    # export to a folder that does not exist, or of an unknown study: exit 2, no file
    assert _main(["export", "--study", "s", "--format", "yaml", "--output",
                  "no/such/dir/best.yaml"]) == 2
    assert not Path("no").exists()
    assert _main(["export", "--study", "other", "--format", "csv", "--output", "u.csv"]) == 2
    assert not Path("u.csv").exists()


def test_killed_search_resumes_to_the_exact_count(workdir: Path) -> None:
    env = {**os.environ, "AUTOTUNE_INJECT": "kill@6"}  # mid-way through trial 0's epoch 2
    killed = subprocess.run([sys.executable, "-m", "autotune", "search", "--trials", "3",
                             "--study", "k", "--space", "space.yaml", "--seed", "1"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 137, killed.stderr[-2000:]
    [run] = [p for p in Path("studies/artifacts/k").iterdir()]
    before = [json.loads(line)["global_epoch"] for line in
              (run / "metrics.jsonl").read_text().splitlines()]
    assert before == [1]

    assert _main(["resume", "--study", "k"]) == 0
    trials = _study("k").get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert trials[0].state == TrialState.FAIL
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[0].params
    assert retry.user_attrs["run_dir"] == str(run.resolve())
    after = [json.loads(line)["global_epoch"] for line in
             (run / "metrics.jsonl").read_text().splitlines()]
    assert after == [1, 2]  # continued from its epoch-1 checkpoint, not from scratch
    assert sorted(retry.intermediate_values) == [1, 2]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["resumed"]
    assert _main(["resume", "--study", "k"]) == 0  # nothing left: still exactly 3
    assert len([t for t in _study("k").get_trials() if t.state == TrialState.COMPLETE]) == 3


def test_two_jobs_share_the_study_and_stop_at_the_count(workdir: Path) -> None:
    assert _main(["search", "--trials", "3", "--study", "j", "--space", "space.yaml",
                  "--jobs", "2", "--seed", "0"]) == 0
    trials = _study("j").get_trials()
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.parametrize(("space", "needle"), [
    ({"learning_rat": {"low": 1e-4, "high": 1e-3}}, "learning_rate"),
    ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "low 0.01 > high"),
    ({"batch_size": {"choices": []}}, "choices is empty"),
    ({"learning_rate": {"low": -1.0, "high": 1e-3, "log": True}}, "low must be > 0"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3}, "epochs": 0}, "epochs must be >= 1"),
])
def test_bad_space_files_exit_2_writing_nothing(workdir: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                space: dict[str, Any], needle: str) -> None:
    Path("bad.yaml").write_text(yaml.safe_dump(space))
    assert _main(["search", "--trials", "2", "--space", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not Path("studies").exists()


@pytest.mark.parametrize("argv", [
    ["search", "--trials", "0"],
    ["search", "--jobs", "0"],
    ["search", "--space", "nowhere.yaml"],
    ["search", "--profile", "huge"],
    ["search", "--storage", "postgresql://me:s3cret@127.0.0.1:9/db"],
    ["export", "--format", "yaml"],
    ["export", "--format", "toml"],
    ["report", "--study", "nope"],
    ["resume", "--study", "nope"],
])
def test_bad_input_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str],
                          argv: list[str]) -> None:
    assert _main(argv) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert not Path("studies/autotune.db").exists()


def test_timeout_starts_no_trial_after_it(workdir: Path) -> None:
    assert _main(["search", "--trials", "5", "--study", "t", "--space", "space.yaml",
                  "--timeout", "0.001"]) == 3  # no trial ended stable
    assert _study("t").get_trials() == []
    assert _study("t").user_attrs["autotune_plan"]["trials"] == 5


def test_reap_requeues_interrupted_and_dead_trials() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    study = optuna.create_study()
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 1.0},
                                        distributions={"x": FloatDistribution(0, 2)},
                                        user_attrs={"interrupted": True, "run_dir": "r0"}))
    dead = study.ask({"x": FloatDistribution(0, 2)})
    dead.set_user_attr("worker", {"host": socket.gethostname(), "pid": gone.pid})
    dead.set_user_attr("run_dir", "r1")
    assert sorted(reap(study)) == [0, 1]
    trials = study.get_trials()
    assert trials[1].state == TrialState.FAIL
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [0, 1]
    assert {t.user_attrs["run_dir"] for t in retries} == {"r0", "r1"}
    assert not any("worker" in t.user_attrs or "interrupted" in t.user_attrs for t in retries)
    assert reap(study) == []  # each is re-queued once


# -- pure decisions on real in-memory studies ------------------------------------------

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


@pytest.mark.parametrize(("target", "finished", "running", "action"), [
    (3, 3, 0, "stop"), (3, 4, 0, "stop"), (3, 1, 1, "run"), (3, 2, 1, "wait"),
    (3, 0, 3, "wait"), (1, 0, 0, "run"),
])
def test_next_action(target: int, finished: int, running: int, action: str) -> None:
    assert next_action(target, finished, running) == action


def test_surplus_is_decided_by_trial_number() -> None:
    study = optuna.create_study()
    _add(study, {}, value=1.0)
    _add(study, {}, state=TrialState.FAIL)
    _add(study, {}, state=TrialState.RUNNING)
    _add(study, {}, state=TrialState.RUNNING)
    trials = study.get_trials()
    assert not is_surplus(trials, 2, 2)   # holders before it: trial 0 (1 is FAIL)
    assert is_surplus(trials, 3, 2)       # trials 0 and 2 hold both slots


def test_credit_goes_to_effective_params_inside_the_space() -> None:
    space = parse_space({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                         "label_smoothing": {"choices": [0.0, 0.1]}})
    sampled = {"learning_rate": 9e-3, "label_smoothing": 0.1}
    params, why = credit_params(space, sampled, {"learning_rate": 3e-3,
                                                 "label_smoothing": 0.0, "epochs": 6})
    assert params == {"learning_rate": 3e-3, "label_smoothing": 0.0} and why == "enqueued"
    params, why = credit_params(space, sampled, {"learning_rate": 3e-5,
                                                 "label_smoothing": 0.1})
    assert params is None and "learning_rate outside" in why
    params, why = credit_params(space, sampled, {**sampled, "skip_batches": [3, 4]})
    assert params is None and "no searched parameter" in why
    assert deserves_credit(1.0, []) and deserves_credit(1.0, [0.9, 1.0, 1.2])
    assert not deserves_credit(1.1, [0.9, 1.0, 1.05]) and not deserves_credit(math.inf, [])


def test_a_restart_from_the_initial_weights_is_its_own_credit() -> None:
    space = parse_space({"learning_rate": {"low": 1e-3, "high": 0.3, "log": True},
                         "label_smoothing": {"choices": [0.0, 0.1]}})
    collapse = {"kind": "recovered", "rolled_back_to": 0,
                "changes": {"learning_rate": [0.05, 0.005]}}
    assert restarted_from_scratch(space, [{"kind": "diverged"}, collapse])
    # A later recovery from a trained epoch, or a change outside the space: not a clean rerun.
    later = {"kind": "recovered", "rolled_back_to": 2,
             "changes": {"learning_rate": [0.005, 0.0017]}}
    assert not restarted_from_scratch(space, [collapse, later])
    assert not restarted_from_scratch(space, [{**collapse, "changes": {
        "learning_rate": [0.05, 0.005], "skip_batches": [[], [3, 4]]}}])
    assert not restarted_from_scratch(space, [{**collapse, "rolled_back_to": 3}])
    assert not restarted_from_scratch(space, [])


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
