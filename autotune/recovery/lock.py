"""One writer a run directory: an advisory lock held while a run is trained.

`train`, `resume`, `autotune.supervise` and every trial of a search hold the lock of their
run directory (`RUN_DIR/.lock`, a `filelock` lock: `flock` on POSIX) for as long as they
write into it; a second process that tries is `RunDirBusy`, exit 2, with one line naming
the holder (pid and host, from `RUN_DIR/.lock.holder`). The lock goes with the process
that held it, however it ends (a kill included): no stale lock is left to clean up.

A search trial that continues the run of a worker found dead or hung (its trial taken over
through the study: `autotune.search.ownership`) may take the lock from that worker
(`steal_from`): a hung worker that wakes up finds its trial taken and writes nothing more.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import filelock

from autotune.errors import ConfigError, excerpt, quote_path

__all__ = ["HOLDER", "LOCK", "Holder", "RunDirBusy", "RunLock", "holder_of", "run_lock"]

LOCK = ".lock"
HOLDER = ".lock.holder"

Holder = tuple[str, int]
"""(host, pid) of a process."""


class RunDirBusy(ConfigError):
    """Another process holds the run directory (exit 2)."""


def me() -> Holder:
    return socket.gethostname(), os.getpid()


def holder_of(run_dir: Path) -> dict[str, Any] | None:
    """What the holder of `run_dir`'s lock wrote about itself (None when unknown)."""
    try:
        with open(Path(run_dir) / HOLDER, "rb") as f:
            record = json.loads(f.read(4096))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _busy(run_dir: Path) -> RunDirBusy:
    record = holder_of(run_dir) or {}
    who = (f"process {record.get('pid')} on host {excerpt(record.get('host'), 60)}"
           if record.get("pid") is not None else "another process")
    command = f" ({excerpt(record['command'], 60)})" if record.get("command") else ""
    return RunDirBusy(f"run directory {quote_path(run_dir)} is in use by {who}{command}; "
                      f"wait for it to end, or stop it first.")


def _try(path: Path) -> filelock.BaseFileLock | None:
    lock = filelock.FileLock(str(path / LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return None
    return lock


class RunLock:
    """The lock of one run directory, for a holder whose hold is not one block (a
    framework callback's session: `acquire` at the start, `release` at the end)."""

    def __init__(self, run_dir: Path, command: str = "",
                 steal_from: Collection[Holder] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self.steal_from = set(steal_from)
        self._lock: filelock.BaseFileLock | None = None

    def acquire(self) -> RunLock:
        """Take the lock (the folder is created); `RunDirBusy` naming the holder when
        another process has it, unless that process is one of `steal_from`."""
        run_dir = self.run_dir
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ConfigError(f"run directory {quote_path(run_dir)} is a file, not a "
                              f"directory.") from None
        except OSError as exc:
            raise ConfigError(f"run directory {quote_path(run_dir)} cannot be created: "
                              f"{exc.strerror}.") from None
        lock = _try(run_dir)
        if lock is None and self.steal_from:
            record = holder_of(run_dir) or {}
            if (record.get("host"), record.get("pid")) in self.steal_from:
                # The holder's trial was taken over: its lock goes with the trial. The old
                # file stays locked by the old holder, unlinked; the lock is a new file.
                (run_dir / LOCK).unlink(missing_ok=True)
                lock = _try(run_dir)
        if lock is None:
            raise _busy(run_dir)
        self._lock = lock
        host, pid = me()
        try:
            (run_dir / HOLDER).write_text(json.dumps({"host": host, "pid": pid,
                                                      "command": self.command}))
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


@contextmanager
def run_lock(run_dir: Path, command: str = "",
             steal_from: Collection[Holder] = ()) -> Iterator[None]:
    """Hold `run_dir`'s lock (the folder is created) for the block (`RunLock.acquire`)."""
    lock = RunLock(run_dir, command, steal_from).acquire()
    try:
        yield
    finally:
        lock.release()
