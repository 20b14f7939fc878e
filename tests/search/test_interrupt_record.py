"""Ctrl-C while a finished trial's result is being recorded: the trial is left resumable
(FAIL with the `interrupted` flag that `resume --study` looks for), and the resume records
the finished run without training it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from autotune import cli
from autotune.errors import Interrupted
from autotune.search import objective
from tests.search.common import stored_study

SPACE = {"learning_rate": {"low": 1.0e-3, "high": 2.0e-3, "log": True},
         "epochs": 1, "max_tasks": 20}


@pytest.mark.slow
def test_ctrl_c_while_recording_a_finished_trial_leaves_it_resumable(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = objective.record_story
    calls: list[int] = []

    def interrupted_once(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Interrupted("SIGINT")  # as the CLI's handler raises it
        real(*args, **kwargs)

    monkeypatch.setattr(objective, "record_story", interrupted_once)
    assert cli.main(["search", "--trials", "1", "--study", "r", "--space", "space.yaml",
                     "--seed", "0"]) == 130
    [first] = stored_study("r").get_trials()
    assert first.state == TrialState.FAIL
    assert first.user_attrs.get("interrupted") is True  # what `resume --study` looks for
    run = Path(first.user_attrs["run_dir"])
    metrics = (run / "metrics.jsonl").read_text()
    assert (run / "summary.json").is_file()

    assert cli.main(["resume", "--study", "r"]) == 0
    trials = stored_study("r").get_trials()
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    assert retry.user_attrs["run_dir"] == str(run)
    assert (run / "metrics.jsonl").read_text() == metrics  # recorded, not trained again
