"""A run's disk writes off the training thread: one background writer, in order.

The supervisor hands it each epoch's metrics line and checkpoint; it runs them one after
another on a single thread, in the order given (a checkpoint on disk therefore implies the
metrics of its epoch are there too), while the next epoch trains. The queue holds at most
`DEPTH` jobs: a writer that falls behind makes the training thread wait rather than pile
up copies of the state.

A job's failure (a full disk) is raised on the training thread at its next `submit` or
`flush`, as the same exception. `flush` waits until every job given so far is done: the
supervisor flushes before it reads the checkpoints' listing (a rollback), before a run
ends (its summary says the run is done), and when it stops for any reason. A kill leaves
at worst a job half done, whose temporary file or missing marker no loader trusts. A
process that must write nothing more (`abandon`: its trial was taken over while it hung)
drops the jobs not started.

A fault injected as `kill@STEP` (`trainer.inject`) flushes the writers first
(`trainer.inject.BEFORE_KILL`): the tests that kill at a step know which checkpoint
exists; a real SIGKILL meets any moment (tests/search/test_chaos.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from trainer import inject

__all__ = ["DEPTH", "Writer"]

DEPTH = 2
"""Jobs waiting at most (one epoch's metrics line and checkpoint)."""

Job = Callable[[], None]


class Writer:
    """Runs jobs on one background thread, in order; see the module docstring."""

    def __init__(self, name: str = "autotune-writer") -> None:
        self.name = name
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=DEPTH)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        """Queue `job` (waits while `DEPTH` jobs are queued); raises an earlier job's
        failure first."""
        self._raise()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
                inject.BEFORE_KILL.append(self.flush)
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every job submitted so far is done; raise the first failure."""
        if self._thread is not None:
            self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Flush, then end the thread (a later `submit` starts a new one)."""
        try:
            self.flush()
        finally:
            with self._lock:
                thread, self._thread = self._thread, None
                if thread is not None:
                    self._jobs.put(None)
                    thread.join()
                    if self.flush in inject.BEFORE_KILL:
                        inject.BEFORE_KILL.remove(self.flush)

    def abandon(self) -> None:
        """Drop the jobs not started yet, let the one running end, and end the thread: for
        a process that must write nothing more (its trial was taken over while it hung)."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
            self._jobs.task_done()
        self._error = None
        self.close()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure, later jobs are not run
                    job()
            except BaseException as exc:  # noqa: BLE001 - raised on the training thread
                self._error = exc
            finally:
                self._jobs.task_done()
