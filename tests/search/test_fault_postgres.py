"""PostgreSQL goes away under two running workers: a restart is ridden out, an outage
longer than the retry bound ends both with one line, and `resume --study` finishes.

Needs the server of AUTOTUNE_TEST_POSTGRES_URL on this machine and the right to restart it
(`pg_ctlcluster`, root); skips otherwise. The server is always started again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from autotune.cli.app import main
from autotune.search import open_storage
from tests.search.faults import (
    TIMEOUT,
    Holds,
    check_checkpoints,
    check_continued,
    check_study,
    finish,
    newest_checkpoint,
    owned,
    saved_all,
    snapshot,
    spawn,
    trials,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ENV = "AUTOTUNE_TEST_POSTGRES_URL"
EPOCHS = 4
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "epochs": EPOCHS, "max_tasks": 20}
TOTAL = 5
BOUND = 6  # AUTOTUNE_STORAGE_RETRY of the workers: a restart fits, the outage does not


def _cluster() -> list[str]:
    if shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        pytest.skip("needs pg_ctlcluster and root to restart the server")
    line = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True,
                          check=True).stdout.split()
    return line[:2]  # version, cluster name


def _pg(cluster: list[str], action: str) -> None:
    done = subprocess.run(["pg_ctlcluster", *cluster, action], capture_output=True, text=True)
    running = "online" in subprocess.run(["pg_lsclusters", "-h", *cluster],
                                         capture_output=True, text=True).stdout
    assert running == (action != "stop"), done.stderr


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    url = os.environ.get(ENV, "").strip()
    if not url:
        pytest.skip(f"{ENV} is not set")
    cluster = _cluster()
    # A password in the URL (trust auth ignores it) that no message may show.
    url = url.replace("postgres@", "postgres:hunter2@", 1)
    try:
        yield url, cluster
    finally:
        _pg(cluster, "start")  # whatever happened, the server runs again


HOLD_STEP = 3  # the second step of epoch 2 (2 steps an epoch): epoch 1 saved, 2+ to go


def test_restart_is_ridden_out_and_a_long_outage_ends_workers_cleanly(
        tmp_path: Path, server: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, cluster = server
    study = f"faults-{uuid.uuid4().hex[:8]}"
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    holds = Holds(tmp_path / "holds")  # every trial of both workers parks at HOLD_STEP
    env = {"AUTOTUNE_STORAGE_RETRY": str(BOUND), "AUTOTUNE_HEARTBEAT": "2,60",
           **holds.env(HOLD_STEP)}
    argv = ["search", "--storage", url, "--study", study, "--trials", str(TOTAL), "--space",
            "space.yaml", "--seed", "0", "--artifacts", str(tmp_path / "artifacts")]
    first = spawn(tmp_path, *argv, core=0, env=env)
    procs = [first]

    def parked(pid: int) -> None:
        """Worker `pid` parked mid-trial, its epoch-1 checkpoint on disk."""
        holds.wait(pid, procs, lambda: any(saved_all(Path(t.user_attrs["run_dir"]))
                                           for t in owned(trials(url, study), pid)))

    try:
        wait_for("the study", lambda: trials(url, study), TIMEOUT, procs)
        procs.append(spawn(tmp_path, *argv, core=1, env=env))
        pids = [p.pid for p in procs]
        for pid in pids:
            parked(pid)
        _pg(cluster, "restart")  # mid-trial for both: ridden out
        for pid in pids:
            holds.release(pid)
        # Both finish their trials through the restarted server and park in their next.
        wait_for("a trial finished after the restart", lambda: sum(
            t.state == TrialState.COMPLETE for t in trials(url, study)) >= 1, TIMEOUT, procs)
        for pid in pids:
            parked(pid)
        _pg(cluster, "stop")
        try:
            for pid in pids:
                holds.release(pid)
            codes = finish(procs, TIMEOUT)  # each exits once its bound has passed
        finally:
            _pg(cluster, "start")
        # What the interrupted trials (still RUNNING: nobody could tell the storage) saved.
        snaps = [snapshot(t) for t in trials(url, study) if t.state == TrialState.RUNNING
                 and (newest_checkpoint(Path(t.user_attrs["run_dir"])) or 0) >= 1]
        assert len(snaps) == len(pids)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    for code, err in codes:
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1, err[-3000:]
        assert lines[0].startswith("autotune: error: storage 'postgresql://postgres:***@")
        assert f"unreachable for more than {BOUND} s" in lines[0]
        assert "hunter2" not in err
    # The interrupted trials are still RUNNING; resume finds their processes gone.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert main(["resume", "--study", study, "--storage", url]) == 0, \
            capsys.readouterr().err[-3000:]
        everything = trials(url, study)
        check_study(everything, TOTAL)
        for snap in snaps:
            check_continued(snap, everything, EPOCHS)
        failed = {t.number for t in everything if t.state == TrialState.FAIL
                  and not t.user_attrs.get("surplus")}
        assert {s.number for s in snaps} <= failed and len(failed) <= len(procs)
        assert check_checkpoints(tmp_path / "artifacts") >= TOTAL
    finally:
        optuna.delete_study(study_name=study, storage=open_storage(url))


def test_a_worker_started_while_the_server_restarts_waits_for_it(
        server: tuple[str, list[str]]) -> None:
    url, cluster = server
    _pg(cluster, "stop")
    back = threading.Timer(1.5, _pg, (cluster, "start"))
    started = time.monotonic()
    back.start()
    try:
        storage = open_storage(url)  # refused at first: a restart, not a bad URL
        assert time.monotonic() - started >= 1.5  # it opened only once the server was up
        assert optuna.get_all_study_names(storage) is not None
    finally:
        back.join()
