"""`autotune search --trainer MODULE:FACTORY` (autotune/search/factory.py): a user's trainer
searched from the command line, the entry stored with the study, bad entries exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from autotune import cli
from autotune.errors import ConfigError
from autotune.search.factory import first_point, load
from autotune.search.sampler import sampled_view
from autotune.search.space import parse_space
from tests.search.common import child_env, stored_study

LM = "tests.search.own_trainers:charlm"
MLP = "tests.search.own_trainers:mlp"
LM_SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-2, "log": True},
            "width": {"choices": [16, 32]}, "seed": 0}


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(LM_SPACE))
    (tmp_path / "mlp.yaml").write_text(yaml.safe_dump(
        {"learning_rate": {"low": 0.01, "high": 0.03, "log": True}, "grad_clip": 0.0,
         "epochs": 6}))
    return tmp_path


def _finished(name: str) -> list:
    return [t for t in stored_study(name).get_trials()
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_a_free_space_takes_the_factorys_keys() -> None:
    space = parse_space({"width": {"choices": [16, 32]}, "layers": {"low": 1, "high": 4},
                         "dropout": {"low": 0.0, "high": 0.5}, "seed": 3}, free=True)
    assert [(p.key, getattr(p, "integer", None)) for p in space.params] == [
        ("width", None), ("layers", True), ("dropout", False)]
    assert first_point(space) == {"seed": 3, "width": 16, "layers": 1, "dropout": 0.0}
    with pytest.raises(ConfigError, match="width"):
        parse_space({"width": {"choices": [16, 32]}})  # not a TrainConfig key


@pytest.mark.slow
def test_search_salvages_a_nan_in_every_trial_rechecks_and_exports(
        here: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@30")  # epoch 2 of every trial
    assert cli.main(["search", "--trainer", LM, "--space", "lm.yaml", "--trials", "2",
                     "--study", "lm", "--epochs", "3", "--seed", "0"]) == 0
    study = stored_study("lm")
    trials = _finished("lm")
    assert len(trials) == 2
    for trial in trials:
        assert trial.state == TrialState.COMPLETE and trial.user_attrs["stable"]
        assert trial.user_attrs["reasons"] == ["nonfinite_loss"]
        assert trial.user_attrs["effective_config"]["width"] == trial.params["width"]
        assert trial.user_attrs["effective_config"]["seed"] == 0
        assert trial.constraints == {"diverged": 0.0}  # stored: salvaged, it ended stable
        assert sampled_view(trial).constraints == {"diverged": 1.0}  # what TPE sees
    plan = study.user_attrs["autotune_plan"]
    assert (plan["kind"], plan["trainer"], plan["profile"]) == ("factory", LM, "")
    check = study.user_attrs["confirmation"]
    assert check["trial"] == study.best_trial.number and check["seed"] == 1
    assert check["confirmed"] is False  # the re-check meets the injected NaN too
    capsys.readouterr()
    # export and report need no --trainer: it is stored with the study.
    assert cli.main(["export", "--study", "lm", "--format", "yaml"]) == 0
    exported = yaml.safe_load(capsys.readouterr().out)
    assert exported["learning_rate"] == pytest.approx(
        study.best_trial.user_attrs["effective_config"]["learning_rate"])
    assert cli.main(["report", "--study", "lm"]) == 0


@pytest.mark.slow
def test_the_rechecked_winner_of_a_clean_search_is_confirmed(here: Path) -> None:
    assert cli.main(["search", "--trainer", MLP, "--space", "mlp.yaml", "--trials", "2",
                     "--study", "m", "--seed", "0"]) == 0
    study = stored_study("m")
    assert len(_finished("m")) == 2
    check = study.user_attrs["confirmation"]
    assert check["trial"] == study.best_trial.number and check["confirmed"]
    assert Path(check["run_dir"]).name == f"confirm-trial-{check['trial']:04d}"


def test_the_study_of_a_trainer_is_joined_with_its_space_and_no_trainer_flag(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["search", "--trainer", LM, "--space", "lm.yaml", "--trials", "1",
                     "--study", "j", "--epochs", "2", "--seed", "0"]) == 0
    # `width` is the trainer's key, not ARC's: the stored study says whose.
    assert cli.main(["search", "--study", "j", "--space", "lm.yaml", "--trials", "2"]) == 0
    assert len(_finished("j")) == 2
    # A study of that name does not exist: the space is read as ARC's, exit 2.
    capsys.readouterr()
    assert cli.main(["search", "--study", "other", "--space", "lm.yaml", "--trials", "1"]) == 2
    assert "width" in capsys.readouterr().err
    assert not (here / "studies" / "artifacts" / "other").exists()


@pytest.mark.parametrize(("entry", "named"), [
    ("no_such_module_xyz:make", "'no_such_module_xyz' cannot be imported"),
    ("tests.search.own_trainers:nope", "has no 'nope'"),
    ("tests.search.own_trainers:NOT_CALLABLE", "not a callable"),
    ("tests.search.own_trainers:raising", "raised ValueError: no such width: 16"),
    ("tests.search.own_trainers:not_a_trainable", "not an autotune.Trainable (missing hparams, "
     "train_epoch, evaluate, state_dict, load_state_dict, apply_changes)"),
    ("tests.search.own_trainers", "must be MODULE:FACTORY"),
])
def test_a_bad_trainer_is_exit_2_naming_it_before_anything_is_written(
        here: Path, capsys: pytest.CaptureFixture[str], entry: str, named: str) -> None:
    assert cli.main(["search", "--trainer", entry, "--space", "lm.yaml", "--trials", "2",
                     "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert named in err and entry in err
    assert not (here / "studies").exists()


@pytest.mark.parametrize(("args", "named"), [
    (["--profile", "tiny"], "--profile 'tiny' does not apply with --trainer"),
    (["--space", None], "--trainer needs --space FILE"),
    ([], "--trainer needs the epochs of a trial"),
])
def test_trainer_flags_that_do_not_fit_are_exit_2(
        here: Path, capsys: pytest.CaptureFixture[str], args: list, named: str) -> None:
    base = ["search", "--trainer", LM, "--trials", "2"]
    if args == ["--space", None]:
        argv = base + ["--epochs", "2"]
    else:
        argv = base + ["--space", "lm.yaml", *args]
    assert cli.main(argv) == 2
    assert named in capsys.readouterr().err
    assert not (here / "studies").exists()


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_exact_count_without_repeating_the_trainer(
        here: Path) -> None:
    env = child_env(AUTOTUNE_INJECT="kill@60")  # trial 0, in its epoch 3
    killed = subprocess.run([sys.executable, "-m", "autotune", "search", "--trainer", LM,
                             "--space", "lm.yaml", "--trials", "3", "--study", "k",
                             "--epochs", "4", "--seed", "1"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    [run] = list(Path("studies/artifacts/k").iterdir())
    before = [json.loads(line)["global_epoch"]
              for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert before == [1, 2]

    assert cli.main(["resume", "--study", "k"]) == 0
    trials = stored_study("k").get_trials()
    assert len(_finished("k")) == 3
    assert trials[0].state == TrialState.FAIL
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.params == trials[0].params and retry.user_attrs["run_dir"] == str(
        run.resolve())
    after = [json.loads(line)["global_epoch"]
             for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert after == [1, 2, 3, 4]  # continued from its epoch-2 checkpoint
    assert cli.main(["resume", "--study", "k"]) == 0  # nothing left: still exactly 3
    assert len(_finished("k")) == 3


def test_load_names_what_is_missing() -> None:
    assert callable(load(LM))
    with pytest.raises(ConfigError, match="has no 'charlm.x'"):
        load(LM + ".x")
