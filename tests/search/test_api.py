"""Searching a trainer that is not ours from Python (autotune/search/api.py): the README's
MLP and a character-level language model, through `autotune.create_study` and
`autotune.objective`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import autotune
from autotune import cli
from autotune.search.pruner import TimelinePruner
from autotune.search.sampler import CreditSampler, sampled_view
from tests.search.common import child_env
from tests.search.own_trainers import OverfittingMLP, build_charlm, build_mlp, build_overfitting

STORAGE = "sqlite:///own.db"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    return tmp_path


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE,
                                                          TrialState.PRUNED)]


def _global_epochs(run: Path) -> list[int]:
    return [json.loads(line)["global_epoch"]
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_diverging_trial_is_salvaged_the_sampler_sees_it_and_the_winner_is_rechecked(
        here: Path) -> None:
    study = autotune.create_study(study_name="mlp", storage=STORAGE)
    study.enqueue_trial({"learning_rate": 0.3})  # the README's rate: diverges at epoch 2
    study.optimize(autotune.objective(build_mlp, epochs=6, run_root="runs/mlp"), n_trials=2)

    loaded = optuna.load_study(study_name="mlp", storage=STORAGE)  # as Optuna reads it
    first = loaded.trials[0]
    assert first.state == TrialState.COMPLETE and first.params == {"learning_rate": 0.3}
    assert first.user_attrs["stable"] and first.user_attrs["divergences"] == 1
    assert first.user_attrs["effective_config"]["learning_rate"] == pytest.approx(0.1)
    assert first.user_attrs["changes"] == {"learning_rate": [0.3, pytest.approx(0.1)]}
    assert first.constraints == {"diverged": 0.0}  # stored: it ended stable
    assert sampled_view(first).constraints == {"diverged": 1.0}  # what the sampler sees
    run = Path(first.user_attrs["run_dir"])
    assert run == here / "runs" / "mlp" / "trial-0000"
    assert [e["kind"] for e in map(json.loads, (run / "events.jsonl").read_text()
                                   .splitlines())] == ["diverged", "recovered"]
    # Its effective rate, inside the space, is queued as a trial of its own.
    assert first.user_attrs["credit"]["enqueued"]
    assert loaded.trials[1].params == {"learning_rate": pytest.approx(0.1)}
    assert loaded.trials[1].user_attrs["credit_of"] == 0
    # Optuna's best trial is autotune's winner, re-checked from scratch.
    check = loaded.user_attrs["confirmation"]
    assert check["trial"] == loaded.best_trial.number and check["confirmed"]
    assert Path(check["run_dir"]) == here / "runs" / "mlp" / \
        f"confirm-trial-{loaded.best_trial.number:04d}"
    plan = loaded.user_attrs["autotune_plan"]
    assert plan["kind"] == "build" and plan["trials"] == 2
    assert plan["trainer"] == "tests.search.own_trainers:build_mlp"


def test_a_search_trial_only_raises_an_alarm_on_overfitting(here: Path) -> None:
    # A trial's value is its best validation loss, which overfitting does not take away: the
    # search leaves the trial alone where a run would roll back and regularise.
    alone = autotune.supervise(OverfittingMLP(epochs=8), here / "alone", epochs=8)
    assert [e.reason for e in alone.events][:2] == ["overfitting", "overfitting"]
    assert alone.recoveries >= 1
    study = autotune.create_study(study_name="over", storage=STORAGE)
    study.enqueue_trial({"learning_rate": 0.02})  # the rate of the run alone: called at 7
    study.optimize(autotune.objective(build_overfitting, epochs=8, run_root="runs/over"),
                   n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["stable"]
    assert trial.user_attrs["recoveries"] == 0 and trial.user_attrs["changes"] == {}
    run = Path(trial.user_attrs["run_dir"])
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["reason"], e["epoch"]) for e in events] == [
        ("alarm", "overfitting", 7)]
    assert _global_epochs(run) == list(range(1, 9))
    assert [e["kind"] for e in trial.user_attrs["events"]] == ["alarm"]
    assert trial.user_attrs["effective_config"]["alarm_only"] == ["overfitting"]
    assert trial.value == pytest.approx(min(trial.intermediate_values.values()))


@pytest.mark.slow
def test_a_nan_in_a_language_model_is_salvaged_and_exported(
        here: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # 26 steps an epoch: step 30 is in epoch 2 of every trial.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@30")
    study = autotune.create_study(study_name="lm", storage=STORAGE,
                                  sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(autotune.objective(build_charlm, epochs=3, run_root="runs/lm"),
                   n_trials=2)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        assert trial.user_attrs["stable"] and trial.user_attrs["recoveries"] == 1
        assert trial.user_attrs["reasons"] == ["nonfinite_loss"]
        assert trial.user_attrs["effective_config"]["learning_rate"] == pytest.approx(
            trial.params["learning_rate"] / 3)
    capsys.readouterr()
    assert cli.main(["export", "--study", "lm", "--storage", STORAGE, "--format",
                     "yaml"]) == 0
    exported = capsys.readouterr().out
    best = study.best_trial
    assert yaml.safe_load(exported)["learning_rate"] == pytest.approx(
        best.user_attrs["effective_config"]["learning_rate"])
    assert yaml.safe_load(exported)["width"] == best.params["width"]
    assert "build_charlm" in exported
    assert cli.main(["export", "--study", "lm", "--storage", STORAGE, "--format",
                     "csv"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and "effective_learning_rate" in rows[0]
    assert cli.main(["report", "--study", "lm", "--storage", STORAGE]) == 0


def test_create_study_wraps_the_given_sampler_and_pruner(here: Path) -> None:
    study = autotune.create_study(sampler=optuna.samplers.RandomSampler(seed=1),
                                  pruner=optuna.pruners.NopPruner())
    assert isinstance(study, optuna.Study)
    assert isinstance(study.sampler, CreditSampler)
    assert isinstance(study.sampler.wrapped, optuna.samplers.RandomSampler)
    assert isinstance(study.pruner, TimelinePruner)
    with pytest.raises(ValueError, match="direction must be minimize"):
        autotune.create_study(direction="maximize")
    with pytest.raises(ValueError, match="epochs must be an integer"):
        autotune.objective(build_mlp, epochs=0, run_root="runs")


SCRIPT = """
import autotune
from tests.search.own_trainers import build_mlp
study = autotune.create_study(study_name="k", storage="{storage}", load_if_exists=True)
if not study.trials:
    study.enqueue_trial({{"learning_rate": 0.02}})  # trial 0 runs its 6 epochs stable
study.optimize(autotune.objective(build_mlp, epochs=6, run_root="runs/k"), n_trials=3)
"""


@pytest.mark.slow
def test_a_killed_script_is_finished_by_resume_study_to_the_exact_count(here: Path) -> None:
    (here / "search.py").write_text(SCRIPT.format(storage=STORAGE))
    env = child_env(AUTOTUNE_INJECT="kill@20")  # trial 0, in its epoch 3 (8 steps)
    killed = subprocess.run([sys.executable, "search.py"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    run = here / "runs" / "k" / "trial-0000"
    assert _global_epochs(run) == [1, 2]

    assert cli.main(["resume", "--study", "k", "--storage", STORAGE]) == 0
    trials = optuna.load_study(study_name="k", storage=STORAGE).get_trials()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE,
                                                 TrialState.PRUNED)]) == 3
    assert trials[0].state == TrialState.FAIL
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.params == trials[0].params and retry.user_attrs["run_dir"] == str(run)
    assert _global_epochs(run) == [1, 2, 3, 4, 5, 6]  # continued from epoch 2's checkpoint
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0]["kind"] == "resumed"


@pytest.mark.slow
def test_rerunning_a_killed_script_continues_its_trial_from_the_checkpoint(
        here: Path) -> None:
    (here / "search.py").write_text(SCRIPT.format(storage=STORAGE))
    env = child_env(AUTOTUNE_INJECT="kill@20")
    killed = subprocess.run([sys.executable, "search.py"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    again = subprocess.run([sys.executable, "search.py"], capture_output=True, text=True,
                           timeout=600, env=child_env())
    assert again.returncode == 0, again.stderr[-2000:]
    trials = optuna.load_study(study_name="k", storage=STORAGE).get_trials()
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE
    assert _global_epochs(here / "runs" / "k" / "trial-0000") == [1, 2, 3, 4, 5, 6]
    # Optuna's meaning of n_trials: the re-run ran 3 trials, the retry among them.
    assert len([t for t in trials if t.state in (TrialState.COMPLETE,
                                                 TrialState.PRUNED)]) == 3
    assert optuna.load_study(study_name="k", storage=STORAGE).user_attrs[
        "autotune_plan"]["trials"] == 3


def test_resume_study_of_a_build_that_cannot_be_imported_says_to_rerun_the_script(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = autotune.create_study(study_name="script", storage=STORAGE)
    objective = autotune.objective(lambda trial: build_mlp(trial), epochs=2, run_root="runs")
    objective.plan(study, 3)  # what its first optimize stores
    assert study.user_attrs["autotune_plan"]["trainer"] is None
    assert cli.main(["resume", "--study", "script", "--storage", STORAGE]) == 2
    err = capsys.readouterr().err
    assert "cannot be imported" in err and "re-run that script" in err
    assert study.get_trials() == []
