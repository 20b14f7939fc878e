"""Workers: exact trial counts across kills, jobs, timeouts (autotune/search/study/workers.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from autotune import cli
from autotune.search import (
    next_action,
    reap,
)
from tests.search.common import stored_study


@pytest.mark.slow
def test_killed_search_resumes_to_the_exact_count(workdir: Path) -> None:
    env = {**os.environ, "AUTOTUNE_INJECT": "kill@6"}  # mid-way through trial 0's epoch 2
    killed = subprocess.run([sys.executable, "-m", "autotune", "search", "--trials", "3",
                             "--study", "k", "--space", "space.yaml", "--seed", "1"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137, killed.stderr[-2000:]
    [run] = [p for p in Path("studies/artifacts/k").iterdir()]
    before = [json.loads(line)["global_epoch"] for line in
              (run / "metrics.jsonl").read_text().splitlines()]
    assert before == [1]

    assert cli.main(["resume", "--study", "k"]) == 0
    trials = stored_study("k").get_trials()
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
    assert cli.main(["resume", "--study", "k"]) == 0  # nothing left: still exactly 3
    assert len([t for t in stored_study("k").get_trials() if t.state == TrialState.COMPLETE]) == 3


def _release_once_both_held(holds: Path, done: threading.Event) -> None:
    """Let the parked workers go once two processes have each parked in a trial (so both
    ran one, however fast either started), and every later hold at once."""
    seen: set[str] = set()
    while not done.is_set():
        marks = list(holds.glob("held-*")) if holds.is_dir() else []
        seen |= {m.name.split("-")[1] for m in marks}
        if len(seen) >= 2:
            for mark in marks:
                mark.unlink(missing_ok=True)
        time.sleep(0.02)


@pytest.mark.slow
def test_two_jobs_share_the_study_and_stop_at_the_count(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two worker processes on one device (as on one GPU: `autotune.search.study.packing`).
    monkeypatch.setenv("AUTOTUNE_INJECT", "hold@1")  # every run parks at its second step
    monkeypatch.setenv("AUTOTUNE_HOLD", str(workdir / "holds"))
    done = threading.Event()
    releaser = threading.Thread(target=_release_once_both_held,
                                args=(workdir / "holds", done), daemon=True)
    releaser.start()
    try:
        assert cli.main(["search", "--trials", "3", "--study", "j", "--space", "space.yaml",
                         "--jobs", "2", "--seed", "0"]) == 0
    finally:
        done.set()
        releaser.join()
    trials = stored_study("j").get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) >= 2  # several processes


def test_timeout_starts_no_trial_after_it(workdir: Path) -> None:
    assert cli.main(["search", "--trials", "5", "--study", "t", "--space", "space.yaml",
                  "--timeout", "0.001"]) == 3  # no trial ended stable
    assert stored_study("t").get_trials() == []
    assert stored_study("t").user_attrs["autotune_plan"]["trials"] == 5


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


def test_reap_and_read_gives_the_trials_as_they_are_after_reaping() -> None:
    from autotune.search.study.workers import reap_and_read

    study = optuna.create_study()
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 1.0},
                                        distributions={"x": FloatDistribution(0, 2)},
                                        user_attrs={"interrupted": True}))
    reaped, trials = reap_and_read(study)  # the loop decides on these: the retry is in
    assert reaped == [0]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    reaped, trials = reap_and_read(study)  # nothing to reap: the one read, as it stands
    assert reaped == [] and [t.number for t in trials] == [0, 1]


@pytest.mark.parametrize(("target", "finished", "running", "action"), [
    (3, 3, 0, "stop"), (3, 4, 0, "stop"), (3, 1, 1, "run"), (3, 2, 1, "wait"),
    (3, 0, 3, "wait"), (1, 0, 0, "run"),
])
def test_next_action(target: int, finished: int, running: int, action: str) -> None:
    assert next_action(target, finished, running) == action
