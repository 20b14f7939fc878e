"""Reading a `search_vs_optuna.py --keep` folder back (benchmarks/read_trials.py): plain's
trials.json and an autotune arm's SQLite study, a rolled-back trial on its surviving
timeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import read_trials  # noqa: E402

LR = FloatDistribution(1e-3, 1e-1, log=True)


def _keep(root: Path) -> Path:
    plain = root / "plain-3"
    plain.mkdir(parents=True)
    plain.joinpath("trials.json").write_text(json.dumps([
        {"number": 0, "state": "COMPLETE", "value": 1.2, "params": {"learning_rate": 0.004},
         "user_attrs": {"stable": True, "diverged": False},
         "intermediate_values": {"1": 1.6, "2": 1.2}},
        {"number": 1, "state": "COMPLETE", "value": 1.4, "params": {"learning_rate": 0.03},
         "user_attrs": {"stable": False, "diverged": True},
         "intermediate_values": {"1": 1.4, "2": 1.7}}]))
    on = root / "on-3"
    on.mkdir()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="bench-on-3", storage=f"sqlite:///{on}/bench-on-3.db")
    # Trial 0 diverged at global epoch 2, rolled back to epoch 1 and ran epochs 2 and 3
    # again (global 3 and 4): 4 epochs of compute, its timeline 1 -> 1, 3 -> 2, 4 -> 3.
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=1.25, params={"learning_rate": 0.03},
        distributions={"learning_rate": LR},
        intermediate_values={1: 1.4, 2: 1.9, 3: 1.3, 4: 1.25},
        user_attrs={"stable": True, "global_epochs": 4, "divergences": 1, "recoveries": 1,
                    "timeline": [[1, 1], [3, 2], [4, 3]],
                    "triage": [{"choice": "recover", "epoch": 1}]}))
    study.add_trial(create_trial(
        state=TrialState.PRUNED, value=None, params={"learning_rate": 0.02},
        distributions={"learning_rate": LR}, intermediate_values={1: 1.7},
        user_attrs={"stable": False, "global_epochs": 1}))
    return root


def test_both_arms_read_back_with_winner_cost_and_timeline(tmp_path: Path) -> None:
    runs = read_trials.read(_keep(tmp_path))
    assert set(runs) == {("plain", 3), ("on", 3)}
    plain, on = runs[("plain", 3)], runs[("on", 3)]
    assert read_trials.winner(plain).number == 0  # the unstable trial 1 does not count
    assert [r.epochs for r in plain] == [2, 2] and plain[1].diverged
    salvaged = on[0]
    assert (salvaged.epochs, salvaged.recoveries, salvaged.triage) == (4, 1, ["recover"])
    assert salvaged.values == {1: 1.4, 2: 1.3, 3: 1.25}  # the stale report is gone
    assert read_trials.winner(on).number == 0
    line = read_trials.trial_line(salvaged, read_trials.winner(on), 2)
    assert line.startswith("*#0") and "triage recover" in line and "@2 1.3000" in line


def test_summary_names_winners_and_what_diverged_cost(tmp_path: Path) -> None:
    lines = read_trials.summary(read_trials.read(_keep(tmp_path)), "learning_rate")
    assert lines[0].startswith("plain 1 seeds: winners' learning_rate median 0.004; "
                               "1 diverged trials, learning_rate median 0.03")
    assert "epochs on diverged trials 2 of 4" in lines[0]
    assert "the best of those 1.2500; epochs on diverged trials 4 of 5" in lines[1]


def test_a_missing_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        read_trials.main([str(tmp_path / "nowhere")])
    assert exc.value.code == 2
    assert "is not a folder" in capsys.readouterr().err


def test_a_salvaged_trial_beside_plains_run_of_the_same_configuration(tmp_path: Path) -> None:
    runs = read_trials.read(_keep(tmp_path))
    pairs = read_trials.salvaged_pairs(runs)
    assert [(seed, on.number, plain.number) for seed, on, plain in pairs] == [(3, 0, 1)]
    lines = read_trials.pairs_lines(pairs)
    assert lines[0] == "seed 3 trial 0 (plain's 1): on 1.2500 in 4 epochs, plain 1.4000 " \
                       "(unstable) in 2"
    assert lines[-1] == ("1 salvaged trials plain ran to the end too: on better in 1, worse "
                         "in 0, median difference -0.1500; epochs 4 against 2")
