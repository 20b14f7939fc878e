"""A whole search: recovered trials, the winner, export and report (autotune/search/outcome.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from autotune import cli
from autotune.recovery.runs import score_run
from autotune.search import (
    winner_of,
)
from autotune.search.vocabulary import ARC_SCORES, StudyAttr, TrialAttr
from tests.search.common import stored_study


@pytest.mark.slow
def test_search_recovers_a_nan_trial_exports_and_reports(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trial 0 gets a NaN loss at its 6th step, put down to the batch, and another at the
    # first step of the replay, which climbs the ladder; two clean trials join the study.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@5,nan_loss@6")
    # --held-out all: every stable trial is scored as it ends (the default is the winner).
    assert cli.main(["search", "--trials", "1", "--study", "s", "--space", "space.yaml",
                  "--seed", "3", "--held-out", "all"]) == 0
    monkeypatch.delenv("AUTOTUNE_INJECT")
    assert cli.main(["search", "--trials", "3", "--study", "s"]) == 0

    study = stored_study("s")
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
    assert first.constraints == {"diverged": 0.0}  # salvaged: feasible, Optuna's best_trial
    assert all(t.constraints == {"diverged": 0.0} for t in trials[1:])
    # Reports at epochs of compute: the partial epochs that diverged count, nothing lost.
    assert sorted(first.intermediate_values) == [1, 4]
    recovered = [e for e in attrs["events"] if e["kind"] == "recovered"]
    assert set(recovered[0]["changes"]) == {"skip_batches"}  # the batch first
    assert attrs["batch_skips"] == 1 and attrs["divergences"] == 2
    assert attrs[TrialAttr.TIMELINE] == [[1, 1], [4, 2]]  # written once the rollback happened
    assert Path(attrs["run_dir"], "metrics.jsonl").is_file()
    summary = json.loads(Path(attrs["run_dir"], "summary.json").read_text())
    assert attrs["test_pass2"] == summary["test"]["test_pass2"]  # ARC's metric, held out
    # Scoring afterwards from the run's latest checkpoint gives the same scores.
    later = score_run(Path(attrs["run_dir"]), "cpu")
    assert {k: later[k] for k in ARC_SCORES} == {k: attrs[k] for k in ARC_SCORES}

    # export yaml round trip through `train --config`
    assert cli.main(["export", "--study", "s", "--format", "yaml", "--output", "best.yaml"]) == 0
    text = Path("best.yaml").read_text()
    assert text.startswith("# autotune: winner of study 's'")
    best = winner_of(trials)
    assert best is not None and yaml.safe_load(text) == best.user_attrs["effective_config"]
    assert cli.main(["train", "--config", "best.yaml", "--epochs", "1", "--run-dir", "w"]) == 0

    # csv: one row per trial with our columns
    assert cli.main(["export", "--study", "s", "--format", "csv", "--output", "t.csv"]) == 0
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

    assert cli.main(["report", "--study", "s", "--out", "rep"]) == 0
    for name in ("history.png", "curves.png"):
        assert (Path("rep") / name).stat().st_size > 1000

    # export to a folder that does not exist, or of an unknown study: exit 2, no file
    assert cli.main(["export", "--study", "s", "--format", "yaml", "--output",
                  "no/such/dir/best.yaml"]) == 2
    assert not Path("no").exists()
    assert cli.main(["export", "--study", "other", "--format", "csv", "--output", "u.csv"]) == 2
    assert not Path("u.csv").exists()


@pytest.mark.slow
def test_recovery_off_prunes_a_diverged_trial_with_its_reason(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@5")
    assert cli.main(["search", "--trials", "1", "--study", "off", "--space", "space.yaml",
                     "--seed", "3", "--recovery", "off"]) == 3  # no trial ended stable
    study = stored_study("off")
    (trial,) = study.get_trials()
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["pruned_reason"] == \
        "diverged (nonfinite_loss) and not recovered: recovery is off"
    assert trial.user_attrs["recoveries"] == 0
    assert study.user_attrs["autotune_plan"]["recovery"] == "off"
    # Joining the study with the other setting is refused before anything runs.
    assert cli.main(["search", "--study", "off", "--recovery", "on"]) == 2


@pytest.mark.slow
def test_only_the_winner_is_scored_on_the_held_out_pairs(workdir: Path) -> None:
    assert cli.main(["search", "--trials", "2", "--study", "w", "--space", "space.yaml",
                     "--seed", "0"]) == 0
    study = stored_study("w")
    trials = study.get_trials()
    best = winner_of(trials)
    assert best is not None
    assert not any(k in t.user_attrs for t in trials for k in ARC_SCORES)  # none as it ended
    record = study.user_attrs[StudyAttr.HELD_OUT]
    summary = json.loads(Path(best.user_attrs["run_dir"], "summary.json").read_text())
    assert record["trial"] == best.number
    assert record["test_pass2"] == summary["test"]["test_pass2"]
    others = [t for t in trials if t.number != best.number]
    assert all("test" not in json.loads(Path(t.user_attrs["run_dir"], "summary.json")
                                        .read_text()) for t in others)
    # export and report still show the winner's scores
    assert cli.main(["export", "--study", "w", "--format", "yaml", "--output", "b.yaml"]) == 0
    assert "# held-out test pairs: pass@2" in Path("b.yaml").read_text()
    assert cli.main(["export", "--study", "w", "--format", "csv", "--output", "t.csv"]) == 0
    frame = pd.read_csv("t.csv").set_index("number")
    assert frame.loc[best.number, "test_pass2"] == record["test_pass2"]
    assert all(math.isnan(frame.loc[t.number, "test_pass2"]) for t in others)
