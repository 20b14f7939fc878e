"""The storage under faults, without a search: retry on a lost connection, the bound, a
SQLite file held locked by another process, the journal's own heartbeat, ownership."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from autotune.errors import ConfigError
from autotune.search.study import ownership
from autotune.search.study.journal import BEAT_ATTR, HeartbeatJournalStorage, stale_trials
from autotune.search.study.retry import (
    DEFAULT_RETRY_S,
    RetryingRDBStorage,
    StorageUnavailable,
    is_transient,
    retry_bound,
    unavailable_in,
)
from autotune.search.study.storage import Heartbeat, open_storage


def _operational(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))


def test_only_lost_or_busy_connections_are_retried() -> None:
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = _operational("server closed the connection unexpectedly")
    assert is_transient(wrapped, sqlite=False)
    assert is_transient(_operational("database is locked"), sqlite=True)
    assert not is_transient(_operational("database or disk is full"), sqlite=True)
    assert not is_transient(ValueError("bad value"), sqlite=False)
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup")),
                            sqlite=False)


def test_the_retry_bound_comes_from_the_environment() -> None:
    assert retry_bound("") == DEFAULT_RETRY_S
    assert retry_bound("2.5") == 2.5
    for bad in ("-1", "soon", "nan"):
        with pytest.raises(ConfigError, match="AUTOTUNE_STORAGE_RETRY"):
            retry_bound(bad)


def _flaky(storage: RetryingRDBStorage, failures: int, monkeypatch: pytest.MonkeyPatch
           ) -> list[int]:
    """Make the storage's get_study_id_from_name fail `failures` times first."""
    calls = [0]
    real = RDBStorage.get_study_id_from_name

    def flaky(self: RDBStorage, name: str) -> int:
        calls[0] += 1
        if calls[0] <= failures:
            raise optuna.exceptions.StorageInternalError("x") from _operational(
                "database is locked")
        return real(self, name)

    monkeypatch.setattr(RDBStorage, "get_study_id_from_name", flaky)
    return calls


def test_a_lost_connection_is_retried_and_past_the_bound_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    storage = RetryingRDBStorage(url, shown="postgresql://me:***@db/x", bound=1.5)
    study = optuna.create_study(storage=storage, study_name="s")
    calls = _flaky(storage, 2, monkeypatch)
    assert storage.get_study_id_from_name("s") == study._study_id and calls[0] == 3
    calls = _flaky(storage, 10_000, monkeypatch)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        storage.get_study_id_from_name("s")
    assert time.monotonic() - started >= 1.5  # it retried for the whole bound first
    message = str(caught.value)
    assert message.startswith("storage 'postgresql://me:***@db/x' unreachable for more "
                              "than 1.5 s (AUTOTUNE_STORAGE_RETRY)")
    assert message.endswith("database is locked; when it is back, `autotune resume "
                            "--study NAME` continues")
    with pytest.raises(StorageUnavailable):  # given up once: at once from now on
        storage.get_study_directions(study._study_id)
    storage.record_heartbeat(0)  # the heartbeat never raises
    wrapper = UnboundLocalError("updated_state")
    wrapper.__context__ = caught.value
    assert unavailable_in(wrapper) is caught.value


HOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()  # until the test says so
db.execute("COMMIT")
print("committed", flush=True)
"""


def test_a_sqlite_file_held_locked_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "studies" / "autotune.db"
    storage = open_storage(f"sqlite:///{path}", heartbeat=Heartbeat(1, 3))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    written = threading.Event()

    def write() -> None:
        trial.report(0.5, step=1)  # a write and, in study.tell, reads: all wait
        study.tell(trial, 0.5)
        written.set()

    writer = threading.Thread(target=write)
    try:
        assert holder.stdin is not None and holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        writer.start()
        # However long it is given, nothing can be written while the lock is held.
        assert not written.wait(timeout=2.0)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
        writer.join(timeout=600)
    finally:
        if holder.poll() is None and holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert written.is_set()  # it did wait for the lock, and went on
    [done] = optuna.load_study(study_name="s", storage=f"sqlite:///{path}").get_trials()
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {1: 0.5}


def test_a_trial_whose_beat_stopped_is_stale_after_the_grace_period() -> None:
    seen, stale = stale_trials({}, {1: [10.0, 0], 2: None}, now=100.0, grace=3)
    assert stale == []
    seen, stale = stale_trials(seen, {1: [11.0, 1], 2: None}, now=102.0, grace=3)
    assert stale == []
    seen, stale = stale_trials(seen, {1: [11.0, 1], 2: None}, now=103.5, grace=3)
    assert stale == [2]  # 1 beat at 102.0; 2 never beat since it was first seen at 100
    seen, stale = stale_trials(seen, {1: [11.0, 1]}, now=105.5, grace=3)
    assert stale == [1] and set(seen) == {1}  # finished trials are forgotten


def test_the_journal_heartbeat_fails_and_requeues_a_silent_trial(tmp_path: Path) -> None:
    log = str(tmp_path / "j.log")
    callback = optuna.storages.RetryHeartbeatStaleTrialCallback()
    writer = HeartbeatJournalStorage(log, interval=1, grace=1, callback=callback)
    study = optuna.create_study(storage=writer, study_name="s")
    trial = study.ask()
    writer.record_heartbeat(trial._trial_id)
    assert BEAT_ATTR in study.trials[0].system_attrs
    reader = HeartbeatJournalStorage(log, interval=1, grace=1, callback=callback)
    watched = optuna.load_study(study_name="s", storage=reader)
    optuna.storages.fail_stale_trials(watched)  # first sight: not stale yet
    assert watched.trials[0].state == TrialState.RUNNING
    time.sleep(1.3)
    optuna.storages.fail_stale_trials(watched)
    states = [t.state for t in watched.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]  # failed and re-queued
    assert watched.trials[1].system_attrs["failed_trial"] == 0
    writer.record_heartbeat(trial._trial_id)  # the woken owner's beat: no error, no write


def test_ownership_check_raises_once_the_trial_was_taken(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    claim = ownership.claim(trial)
    try:
        ownership.check(claim)  # still running: nothing
        study.tell(trial.number, state=TrialState.FAIL)  # as a stale-trial reaper does
        with pytest.raises(ownership.TrialTaken, match=f"trial {trial.number} "):
            ownership.check(claim)
    finally:
        ownership.release()
    assert ownership.current() is None


def test_the_ownership_check_reads_the_state_alone_through_optunas_cache(
        tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert isinstance(storage, RetryingRDBStorage)
    assert storage.trial_state(trial._trial_id) == TrialState.RUNNING
    with pytest.raises(KeyError, match="no trial with trial_id 999"):
        storage.trial_state(999)
    claim = ownership.claim(trial)  # its storage is Optuna's cache around ours
    try:
        assert ownership.still_mine(claim)
        other = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
        other.tell(trial.number, state=TrialState.FAIL)  # another process reaps it
        assert storage.trial_state(trial._trial_id) == TrialState.FAIL
        assert not ownership.still_mine(claim)
    finally:
        ownership.release()


def test_an_epoch_of_a_trial_taken_over_writes_nothing(tmp_path: Path) -> None:
    from autotune.search.recorder import TrialRecorder

    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    trial = study.ask()
    recorder = TrialRecorder(trial, tmp_path / "run", lambda event: None)
    try:
        def epoch(n: int, value: float) -> dict[str, float]:
            return {"epoch": n, "global_epoch": n, "val_loss": value, "train_loss": 1.0}

        recorder.on_epoch(epoch(1, 1.5))  # its report is the ownership check: it passes
        recorder.on_epoch(epoch(1, 1.5))  # nothing to report: the storage is asked
        optuna.load_study(study_name="s", storage=url).tell(trial.number,
                                                            state=TrialState.FAIL)
        with pytest.raises(ownership.TrialTaken, match=f"trial {trial.number} is no longer"):
            recorder.on_epoch(epoch(2, 1.4))  # the storage refused the report
        with pytest.raises(ownership.TrialTaken, match=f"trial {trial.number} is no longer"):
            recorder.on_epoch(epoch(3, float("nan")))  # no report: asked on its own
    finally:
        ownership.release()
    [stored] = optuna.load_study(study_name="s", storage=url).get_trials()
    assert stored.state == TrialState.FAIL and stored.intermediate_values == {1: 1.5}


def test_optunas_migration_scripts_are_read_once_and_still_checked(tmp_path: Path) -> None:
    import sqlite3

    from optuna.storages._rdb.storage import _VersionManager

    first = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    second = open_storage(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(first, RDBStorage) and isinstance(second, RDBStorage)
    script = first._version_manager._create_alembic_script()
    assert second._version_manager._create_alembic_script() is script  # one a process
    assert _VersionManager._create_alembic_script._autotune_shared
    for storage in (first, second):  # each file stamped with the head, as Optuna does
        assert storage.get_current_version() == script.get_current_head()
    optuna.create_study(storage=first, study_name="s")
    with sqlite3.connect(tmp_path / "a.db") as db:  # a schema this Optuna does not know
        db.execute("UPDATE alembic_version SET version_num = 'v99.0.0.a'")
    with pytest.raises(ConfigError, match="no longer compatible with the table schema"):
        open_storage(f"sqlite:///{tmp_path / 'a.db'}", create=False)


def test_several_user_attributes_are_one_transaction(tmp_path: Path) -> None:
    from autotune.search.objective import set_user_attrs

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'a.db'}"),
                                study_name="s")
    trial = study.ask()
    set_user_attrs(trial, {"a": 1, "b": [1, 2], "c": {"x": None}})
    assert trial.user_attrs == {"a": 1, "b": [1, 2], "c": {"x": None}}
    study.tell(trial, 0.5)
    [done] = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'a.db'}"
                               ).get_trials()
    assert done.user_attrs == {"a": 1, "b": [1, 2], "c": {"x": None}}
    memory = optuna.create_study()  # a storage without the batch: one call a key
    other = memory.ask()
    set_user_attrs(other, {"a": 1})
    assert memory.trials[0].user_attrs == {"a": 1}


def test_a_new_sqlite_file_is_in_wal_mode_and_an_existing_one_keeps_its_own(
        tmp_path: Path) -> None:
    import sqlite3

    new = tmp_path / "new.db"
    storage = open_storage(f"sqlite:///{new}")
    optuna.create_study(storage=storage, study_name="s").ask().set_user_attr("k", 1)
    with sqlite3.connect(new) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert isinstance(storage, RDBStorage)
    with storage.engine.connect() as connection:  # commits do not wait for the disk
        assert connection.exec_driver_sql("PRAGMA synchronous").fetchone() == (1,)

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE mine (a)")
    kept = open_storage(f"sqlite:///{old}", create=False)
    assert isinstance(kept, RDBStorage)
    with sqlite3.connect(old) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    with kept.engine.connect() as connection:  # SQLite's default durability
        assert connection.exec_driver_sql("PRAGMA synchronous").fetchone() == (2,)
    assert not (tmp_path / "old.db-wal").exists()
