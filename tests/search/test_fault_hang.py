"""A worker that hangs: SIGSTOP longer than the heartbeat grace period, then SIGCONT.

Two `autotune search` workers share a study. One is stopped mid-trial, after a
checkpoint; the other fails its trial as stale, re-queues it and continues its run
directory from that checkpoint. The stopped one is continued while the new owner trains:
it notices that its trial was taken (SIGCONT handler, `autotune.search.ownership`), writes
nothing more into it, and goes on. The study ends with exactly the requested trials, none
lost or counted twice, the hung trial continued from its checkpoint, every checkpoint
loadable, both workers exit 0.

On the journal storage (`journal:PATH`, many machines without a database server) the
stale trial is found by autotune's own heartbeat (`autotune.search.journal`): the worker
process is alive on this machine, so only the heartbeat can tell; on SQLite by Optuna's.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from autotune.cli.app import main
from tests.search.faults import (
    STUDY,
    TIMEOUT,
    Holds,
    check_checkpoints,
    check_continued,
    check_study,
    finish,
    metrics,
    owned,
    saved_all,
    snapshot,
    spawn,
    trials,
    wait_for,
)

EPOCHS = 4
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "epochs": EPOCHS, "max_tasks": 20}  # 2 optimizer steps an epoch, ~0.4 s
TOTAL = 2
HOLD_STEP = 3  # the second step of epoch 2 (2 steps an epoch)
HEARTBEAT = {"AUTOTUNE_HEARTBEAT": "1,3"}  # beat every second, stale after 3 s


@pytest.mark.slow
# The journal only: its heartbeat is autotune's own. On SQLite and PostgreSQL it is Optuna's
# (the same ownership check; `benchmarks/chaos.py --hangs` exercises it on PostgreSQL);
# add "sqlite" here to run it too (about as long again).
@pytest.mark.parametrize("kind", ["journal"])
def test_a_hung_worker_is_taken_over_and_writes_nothing_after(
        tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = (f"journal:{tmp_path / 'studies' / 'faults.log'}" if kind == "journal"
               else f"sqlite:///{tmp_path / 'studies' / 'faults.db'}")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    argv = ["search", "--storage", storage, "--study", STUDY, "--trials", str(TOTAL),
            "--space", "space.yaml", "--seed", "0"]
    holds = Holds(tmp_path / "holds")  # the first worker's first trial parks mid-epoch 2
    hung = spawn(tmp_path, *argv, core=0, env={**HEARTBEAT, **holds.env(HOLD_STEP)})
    wait_for("the study", lambda: trials(storage), TIMEOUT, [hung])
    other = spawn(tmp_path, *argv, core=1, env=HEARTBEAT)
    procs = [hung, other]
    try:
        def victim() -> object:
            # The parked trial: epoch 1 checkpointed, 2+ epochs to go.
            mine = owned(trials(storage), hung.pid)
            return mine and saved_all(Path(mine[0].user_attrs["run_dir"])) and mine[0]

        victim_trial = holds.wait(hung.pid, procs, victim)
        # Stopped inside an epoch's training, away from the storage calls at its end.
        os.kill(hung.pid, signal.SIGSTOP)
        holds.release(hung.pid, for_good=True)  # it goes on only once it is woken
        snap = snapshot(victim_trial)

        def taken_over() -> object:
            retries = [t for t in trials(storage) if t.user_attrs.get("retry_of")
                       == snap.number and t.state == TrialState.RUNNING]
            return retries and len(metrics(snap.run_dir)) > snap.checkpoint
        wait_for("the takeover", taken_over, TIMEOUT, [other], poll=0.1)
        os.kill(hung.pid, signal.SIGCONT)  # wakes while the new owner trains
        codes = finish(procs, TIMEOUT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait()

    assert [code for code, _ in codes] == [0, 0], [err[-3000:] for _, err in codes]
    assert not [err for _, err in codes if "Traceback" in err]
    everything = trials(storage)
    check_study(everything, TOTAL)
    assert next(t for t in everything if t.number == snap.number).state == TrialState.FAIL
    failed = [t.number for t in everything if t.state == TrialState.FAIL
              and not t.user_attrs.get("surplus")]
    assert failed == [snap.number]  # only the hung one
    check_continued(snap, everything, EPOCHS)
    assert check_checkpoints(tmp_path / "studies" / "artifacts" / STUDY) >= TOTAL
    # export and resume read the same storage (resume: nothing left to do).
    monkeypatch.chdir(tmp_path)
    assert main(["export", "--study", STUDY, "--storage", storage, "--format", "csv",
                 "--output", "trials.csv"]) == 0
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == len(everything) + 1
