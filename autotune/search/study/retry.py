"""Riding out a storage outage: every call to the database is retried with backoff.

`RetryingRDBStorage` is Optuna's `RDBStorage` whose methods that talk to the database retry
a lost connection (a PostgreSQL restart or outage, a SQLite file held locked by another
process) with exponential backoff (`tenacity`), for at most `AUTOTUNE_STORAGE_RETRY`
seconds (default 120) a call. Every call goes through them, those Optuna makes itself
(`tell`, `report`, `set_user_attr`, `ask`, the heartbeat thread), so a worker waits the
outage out and carries on with its trial. Past the bound a call raises
`StorageUnavailable`, which names the storage (password masked): the process cannot go
on, and the CLI turns it into one line and exit code 1; the trial it ran stays RUNNING
and is continued from its checkpoint by `autotune resume --study` (its process is gone).

After one call gave up, the others of the same storage give up at once (a process does
not wait the bound twice), except the heartbeat, which never raises: a missed heartbeat
only makes the trial look stale, which `autotune.search.study.ownership` handles.

Only the errors of a lost or busy connection are retried (SQLAlchemy's OperationalError,
InterfaceError or an invalidated connection; for SQLite only "database is locked" and
"busy"): a full disk or a bad value fails at once. A write whose commit reached the
server but whose answer was lost is retried like any other; finishing a trial twice is
recognised (the second `set_trial_state_values` finds the state it wanted). Optuna's
`create_new_trial` already retries on its own; a trial created by a commit whose answer
was lost would stay RUNNING without a heartbeat (not reaped by Optuna; rare).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, TypeVar

import sqlalchemy.event
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
    wait_random,
)

from autotune.errors import ConfigError, excerpt

__all__ = ["DEFAULT_RETRY_S", "RetryingRDBStorage", "StorageUnavailable", "is_transient",
           "retry_bound", "share_alembic_script", "unavailable_in"]

DEFAULT_RETRY_S = 120.0
MAX_RETRY_S = 86400.0  # a day
ENV = "AUTOTUNE_STORAGE_RETRY"
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy")

F = TypeVar("F", bound=Callable[..., Any])


class StorageUnavailable(BaseException):
    """The storage stayed unreachable for longer than the retry bound: this process cannot
    go on (exit 1, one line). A BaseException like `Interrupted`, so that Optuna does not
    catch it as a failure of the objective and try to tell the unreachable storage."""


# -- pure decisions -----------------------------------------------------------------------

def retry_bound(raw: str | None = None) -> float:
    """Seconds a storage call is retried: `AUTOTUNE_STORAGE_RETRY` (0 = no retry)."""
    raw = os.environ.get(ENV, "") if raw is None else raw
    if not raw.strip():
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_RETRY_S:  # also NaN and inf
        raise ConfigError(f"{ENV} takes a finite number of seconds >= 0 and <= {MAX_RETRY_S:g} "
                          f"but got {excerpt(raw)}.")
    return value


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def unavailable_in(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable that caused `exc` (Optuna may wrap it while it cleans up)."""
    return next((e for e in _chain(exc) if isinstance(e, StorageUnavailable)), None)


def is_transient(exc: BaseException, sqlite: bool) -> bool:
    """Whether `exc` (or what caused it: Optuna wraps SQLAlchemy's errors) is a lost or busy
    connection that a later try may not meet."""
    from sqlalchemy import exc as sa

    for e in _chain(exc):
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa.DisconnectionError):
            return True
        if isinstance(e, sa.OperationalError | sa.InterfaceError):
            if not sqlite:
                return True
            message = str(e.orig if e.orig is not None else e).lower()
            return any(s in message for s in _SQLITE_TRANSIENT)
    return False


# -- the storage --------------------------------------------------------------------------

def _retried(method: F) -> F:
    """`method` of RDBStorage (looked up when called), retried."""
    name = method.__name__

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(RDBStorage, name), self, *args, **kwargs)
    return call  # type: ignore[return-value]  # same signature as `method` (wraps)


def share_alembic_script() -> None:
    """Make Optuna read its schema's migration scripts once a process, not at every open.

    Opening an RDB storage asks alembic for the schema's head revision up to three times
    (stamping a new file, checking an existing one), and Optuna builds alembic's script
    directory anew for each: it executes Optuna's ten revision files every time, about
    0.25 s of the 0.3 s that opening a new SQLite study takes on the 2-core development
    machine (BENCHMARKS.md, "Sixth session"). The directory depends only on the Optuna
    installed, so one per process is the same answer. Nothing changes where Optuna has
    moved the method (the open is then as slow as before, never wrong).
    """
    from optuna.storages._rdb import storage as rdb

    manager = getattr(rdb, "_VersionManager", None)
    build = getattr(manager, "_create_alembic_script", None)
    if build is None or getattr(build, "_autotune_shared", False):
        return
    built: list[Any] = []

    @functools.wraps(build)
    def shared(self: Any) -> Any:
        if not built:
            built.append(build(self))
        return built[0]

    shared._autotune_shared = True  # type: ignore[attr-defined]
    manager._create_alembic_script = shared  # type: ignore[union-attr]


def _normal_sync_if_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode").fetchone()
        if mode and str(mode[0]).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class RetryingRDBStorage(RDBStorage):
    """`RDBStorage` whose database calls retry a lost connection (see the module docstring).

    `shown` is the storage as messages name it (password masked); `bound` the seconds a
    call is retried (`retry_bound()` when None).
    """

    def __init__(self, url: str, *, shown: str, bound: float | None = None,
                 **kwargs: Any) -> None:
        self._shown = shown
        self._bound = retry_bound() if bound is None else bound
        self._down = threading.Event()
        self._sqlite = url.startswith("sqlite")
        share_alembic_script()
        super().__init__(url, **kwargs)
        self._sync_normal_in_wal()

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        state.pop("_down", None)  # an Event does not pickle; a copy starts up
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._down = threading.Event()
        self._sync_normal_in_wal()

    def _sync_normal_in_wal(self) -> None:
        """A SQLite file in WAL mode (`storage.start_in_wal`) commits without waiting for
        the disk; a file in any other mode keeps SQLite's default (FULL)."""
        if not self._sqlite:
            return
        sqlalchemy.event.listen(self.engine, "connect", _normal_sync_if_wal)
        self.engine.dispose()  # connections opened before the listener reconnect with it

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._down.is_set():
            raise StorageUnavailable(self._message(None))
        retrying = Retrying(
            retry=retry_if_exception(lambda e: is_transient(e, self._sqlite)),
            stop=stop_after_delay(self._bound) | stop_when_event_set(self._down),
            wait=wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2),
            sleep=self._sleep)
        try:
            return retrying(method, *args, **kwargs)
        except RetryError as exc:
            self._down.set()
            raise StorageUnavailable(self._message(exc.last_attempt.exception())) from None

    def _sleep(self, seconds: float) -> None:
        """Tenacity's sleep between tries: cut short when the storage is declared down."""
        self._down.wait(seconds)

    def _message(self, last: BaseException | None) -> str:
        cause = ""
        if last is not None:
            root = list(_chain(last))[-1]
            text = str(root).strip().splitlines()
            cause = f": {text[0] if text else type(root).__name__}"
        return (f"storage {excerpt(self._shown)} unreachable for more than {self._bound:g} s "
                f"({ENV}){cause}; when it is back, `autotune resume --study NAME` continues")

    # The methods that open a session: each retried as a whole (none calls another).
    create_new_study = _retried(RDBStorage.create_new_study)
    delete_study = _retried(RDBStorage.delete_study)
    set_study_user_attr = _retried(RDBStorage.set_study_user_attr)
    set_study_system_attr = _retried(RDBStorage.set_study_system_attr)
    get_study_id_from_name = _retried(RDBStorage.get_study_id_from_name)
    get_study_name_from_id = _retried(RDBStorage.get_study_name_from_id)
    get_study_directions = _retried(RDBStorage.get_study_directions)
    get_study_user_attrs = _retried(RDBStorage.get_study_user_attrs)
    get_study_system_attrs = _retried(RDBStorage.get_study_system_attrs)
    get_trial_user_attrs = _retried(RDBStorage.get_trial_user_attrs)
    get_trial_system_attrs = _retried(RDBStorage.get_trial_system_attrs)
    get_all_studies = _retried(RDBStorage.get_all_studies)
    _create_new_trial = _retried(RDBStorage._create_new_trial)
    _set_trial_param = _retried(RDBStorage._set_trial_param)
    get_trial_param = _retried(RDBStorage.get_trial_param)
    set_trial_intermediate_value = _retried(RDBStorage.set_trial_intermediate_value)
    set_trial_user_attr = _retried(RDBStorage.set_trial_user_attr)
    set_trial_system_attr = _retried(RDBStorage.set_trial_system_attr)
    get_trial_id_from_study_id_trial_number = _retried(
        RDBStorage.get_trial_id_from_study_id_trial_number)
    get_trial = _retried(RDBStorage.get_trial)
    _get_trials = _retried(RDBStorage._get_trials)
    _get_best_trial_id = _retried(RDBStorage._get_best_trial_id)
    _get_stale_trial_ids = _retried(RDBStorage._get_stale_trial_ids)

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes in one transaction (one commit, where Optuna's
        `set_trial_user_attr` makes one a key), retried like every call."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        def once() -> None:
            with _create_scoped_session(self.scoped_session, True) as session:
                for key, value in attrs.items():
                    self._set_trial_attr_without_commit(
                        session, models.TrialUserAttributeModel, trial_id, key, value)

        self._call(once)

    def trial_state(self, trial_id: int) -> TrialState:
        """One trial's state alone (one column of one row), retried like every call: what
        `ownership` asks at every epoch, where `get_trial` would load the whole trial
        (parameters, attributes, reports): on SQLite here 0.6-0.9 ms a call against 3.7-4.1 ms
        for a trial of 7 parameters, 12 attributes and 6 reports."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        def once() -> TrialState:
            with _create_scoped_session(self.scoped_session) as session:
                state = (session.query(models.TrialModel.state)
                         .filter(models.TrialModel.trial_id == trial_id).scalar())
            if state is None:
                raise KeyError(f"no trial with trial_id {trial_id}")
            return TrialState(state)

        return self._call(once)

    def count_trials(self, study_id: int, states: Collection[TrialState]) -> int:
        """How many of the study's trials are in `states` (one count query), retried like
        every call: what `autotune.search.pruner` asks at every epoch to know whether the
        study's finished trials changed, where reading them reloads every running trial
        (in a search here, right after an epoch of training: 1.5 ms a count against 6 ms a
        read)."""
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        def once() -> int:
            with _create_scoped_session(self.scoped_session) as session:
                return int(session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
                           .filter(models.TrialModel.study_id == study_id,
                                   models.TrialModel.state.in_(list(states)))
                           .scalar() or 0)

        return self._call(once)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Any = None) -> bool:
        tries = 0

        def once() -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # A retry of a commit whose answer was lost finds its own state: done.
                if tries > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return self._call(once)

    def record_heartbeat(self, trial_id: int) -> None:
        """Never raises (it runs in Optuna's heartbeat thread): a beat that cannot be
        written is skipped; the trial's owner notices if it was taken meanwhile."""
        try:
            self._call(RDBStorage.record_heartbeat, self, trial_id)
        except (Exception, StorageUnavailable):
            return
