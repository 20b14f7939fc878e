"""Optuna storages: the URL, opening it with heartbeat and retry, loading a study.

SQLite by default (`sqlite:///studies/autotune.db` under the current folder), any
SQLAlchemy URL Optuna accepts, PostgreSQL for many machines, or `journal:PATH` (Optuna's
journal file, for many machines without a database server: `autotune.search.study.journal`).
Database calls retry a lost connection (`autotune.search.study.retry`). Messages never show a
password.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from autotune.errors import ConfigError, excerpt, quote_path
from autotune.search.study.journal import HeartbeatJournalStorage, journal_path
from autotune.search.study.retry import RetryingRDBStorage, retry_bound
from autotune.secrets import mask_url, scrub

DEFAULT_STORAGE = "sqlite:///studies/autotune.db"
HEARTBEAT_MAX = 86400  # seconds: a day; more is a typo, and overflows a timer
_SECONDS = re.compile(r"[0-9]{1,9}")


# -- settings -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial proves it is alive, and after how long it counts as dead.

    `AUTOTUNE_HEARTBEAT=INTERVAL[,GRACE]` (seconds) overrides the defaults, e.g. on a
    cluster whose machines are preempted often.
    """

    interval: int = 10
    grace: int = 60

    def __post_init__(self) -> None:
        if not 1 <= self.interval <= HEARTBEAT_MAX:
            raise ConfigError(f"heartbeat interval must be >= 1 and <= {HEARTBEAT_MAX} s but "
                              f"got {excerpt(self.interval)}.")
        if not self.interval < self.grace <= HEARTBEAT_MAX:
            raise ConfigError(f"heartbeat grace period must exceed the interval "
                              f"({self.interval} s) and be <= {HEARTBEAT_MAX} s but got "
                              f"{excerpt(self.grace)}.")

    @classmethod
    def from_env(cls) -> Heartbeat:
        raw = os.environ.get("AUTOTUNE_HEARTBEAT", "").strip()
        if not raw:
            return cls()
        parts = raw.split(",")
        if len(parts) > 2 or not all(_SECONDS.fullmatch(p.strip()) for p in parts):
            raise ConfigError(f"AUTOTUNE_HEARTBEAT takes INTERVAL[,GRACE], one or two whole "
                              f"numbers of seconds (at most {HEARTBEAT_MAX}), but got "
                              f"{excerpt(raw)}.")
        numbers = [int(p) for p in parts]
        try:
            return cls(numbers[0], numbers[1] if len(numbers) > 1 else 3 * numbers[0])
        except ConfigError as exc:
            raise ConfigError(f"AUTOTUNE_HEARTBEAT {excerpt(raw)}: {exc}") from None


# -- storage ------------------------------------------------------------------------------

def storage_url(url: str | None) -> str:
    """The storage URL: the default SQLite file under the current directory when None."""
    return DEFAULT_STORAGE if url is None else url


def storage_files(url: str | None) -> list[Path]:
    """The files that hold a study on this machine (a SQLite database with its journal
    and WAL files, or a journal file); [] for a database server."""
    url = storage_url(url)
    journal = journal_path(url)
    if journal is not None:
        return [Path(journal)] if journal else []
    try:
        path = _sqlite_file(url)
    except Exception:
        return []
    if path is None:
        return []
    return [path, *(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))]


def start_in_wal(path: Path) -> None:
    """Create a new SQLite file in write-ahead-log mode (a setting the file keeps).

    Only for a file a search creates: a file that exists keeps the mode its owner chose
    (opening one must write nothing). In WAL mode `RetryingRDBStorage` commits with
    `synchronous=NORMAL`: a commit no longer waits for the disk (5-60 ms each here); a
    killed process loses nothing, a power cut may lose the last commits but never
    corrupts the file (sqlite.org/wal.html). Not for a file on a network file system.
    """
    import sqlite3
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as db:
            db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error:
        pass  # the storage's own open reports a file it cannot use


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key")
# A server that is restarting: a worker started at that moment waits, briefly (a server
# that is not there at all is bad input, exit 2, a few seconds later). Both kinds are tried
# 6 times and for 4 s at least (one try may wait long for a SQLite lock).
_RESTARTING = ("the database system is starting up", "the database system is shutting down",
               "the database system is in recovery mode", "Connection refused",
               "terminating connection", "server closed the connection")
STARTUP_RETRY_S = 4.0


def _worth_again(exc: BaseException) -> bool:
    """Opening the storage failed in a way a try a moment later may not: workers started
    together on a new database race to create its tables (the losers find them made), or
    the server is restarting."""
    text = str(exc)
    return not isinstance(exc, ImportError) and any(
        s in text for s in (*_SCHEMA_RACE, *_RESTARTING))


def _with_driver(url: str) -> str:
    """A plain `postgresql://` URL with the driver that is installed: SQLAlchemy 2.1 reads
    it as psycopg (3), while the `postgres` extra installs psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or not sep:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"postgresql+psycopg2://{rest}"
    return url


def _open_journal(url: str, path: str, create: bool, heartbeat: Heartbeat) -> BaseStorage:
    file = Path(path)
    if not path or file.is_dir():
        raise ConfigError(f"--storage {excerpt(url)} needs a file: journal:PATH, e.g. "
                          f"journal:studies/autotune.log.")
    if not file.exists() and not create:
        raise ConfigError(f"storage {excerpt(url)} does not exist (no file {excerpt(path)}); run "
                          f"`autotune search` first.")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return HeartbeatJournalStorage(str(file), interval=heartbeat.interval,
                                           grace=heartbeat.grace,
                                           callback=RetryHeartbeatStaleTrialCallback())
    except OSError as exc:
        raise ConfigError(f"storage {excerpt(url)} cannot be opened: {exc.strerror} "
                          f"({exc.filename or path}).") from None


def open_storage(url: str | None, *, create: bool = True,
                 heartbeat: Heartbeat | None = None) -> BaseStorage:
    """A storage with heartbeat and retry (an RDB storage, or a journal file for
    `journal:PATH`); ConfigError (password masked) when the URL is malformed, its driver is
    missing or its server cannot be reached. With `create=False` a missing SQLite or
    journal file is an error and nothing is written."""
    url = storage_url(url)
    heartbeat = heartbeat or Heartbeat.from_env()
    bound = retry_bound()
    journal = journal_path(url)
    if journal is not None:
        return _open_journal(url, journal, create, heartbeat)
    shown = mask_url(url)
    try:
        path = _sqlite_file(url)
    except Exception as exc:
        raise ConfigError(f"--storage {excerpt(shown)} is not a database URL "
                          f"(e.g. sqlite:///studies/autotune.db or "
                          f"postgresql://user:password@host/db): "
                          f"{scrub(str(exc), url)[:200]}") from None
    if path is not None:
        if not path.exists() and not create:
            raise ConfigError(f"storage {excerpt(shown)} does not exist (no file "
                              f"{quote_path(path)}); "
                              f"run `autotune search` first.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"storage {excerpt(shown)}: cannot create folder "
                              f"{quote_path(path.parent)}: {exc.strerror}.") from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        # Several local processes share one SQLite file: wait for its lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
        if not path.exists():
            start_in_wal(path)
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback()

        def connect() -> RDBStorage:
            return RetryingRDBStorage(_with_driver(url), shown=shown, bound=bound,
                                      engine_kwargs=engine_kwargs,
                                      heartbeat_interval=heartbeat.interval,
                                      grace_period=heartbeat.grace,
                                      heartbeat_stale_trial_callback=retry)

        try:
            return Retrying(retry=retry_if_exception(_worth_again),
                            stop=stop_after_attempt(6) & stop_after_delay(STARTUP_RETRY_S),
                            wait=wait_exponential(multiplier=0.2, max=1.0) + wait_random(0, 0.2),
                            reraise=True)(connect)
        except ImportError as exc:
            hint = ("pip install 'autotune[postgres]'" if url.startswith("postgres")
                    else "install the SQLAlchemy driver of that database")
            raise ConfigError(f"storage {excerpt(shown)} needs a database driver that is not "
                              f"installed ({scrub(str(exc.name or exc), url)}); {hint}.") from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {excerpt(shown)} cannot be opened: "
                              f"{scrub(first, url)[:300]}") from None


def load_study(name: str, url: str | None) -> optuna.Study:
    """An existing study (ConfigError naming the known ones when it does not exist)."""
    storage = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=name, storage=storage,
                                 sampler=optuna.samplers.RandomSampler())
    except KeyError:
        known = optuna.get_all_study_names(storage)
        shown = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"no study {excerpt(name)} in storage "
                          f"{excerpt(mask_url(storage_url(url)))} "
                          f"(studies there: {shown}).") from None
