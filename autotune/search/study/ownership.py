"""Who owns a trial: a worker that hung notices that its trial was taken over.

A worker that stops answering (SIGSTOP, a frozen machine) for longer than the heartbeat
grace period looks dead: another worker fails its trial as stale and re-queues it
(`RetryHeartbeatStaleTrialCallback`, or `autotune resume --study`), and the new trial
continues the same run directory from its checkpoint. When the old worker wakes up it must
write nothing more into that trial or that run directory. Two checks see to it:

- On SIGCONT (the worker was stopped and is continued) a signal handler runs in the main
  thread before the training code goes on: it asks the storage whether the trial is still
  RUNNING; when it is not, or the answer does not come within a few seconds, it raises
  `TrialTaken` from where the main thread was, before the epoch's metrics or checkpoint
  are written.
- At the start of every epoch's hook (`recorder.TrialRecorder.on_epoch`) the epoch's report
  asks the same (a hang without a SIGCONT: a slow disk, a long pause): the storage refuses
  a report to a finished trial, in the report's own transaction, and the recorder turns
  that into `TrialTaken` (`check`); an epoch that reports nothing calls `check` itself.

`TrialTaken` is a BaseException like `Interrupted`: neither the supervisor (which writes an
`interrupted` event) nor Optuna (which would tell the trial FAILED) catches it, so the
trial, its attributes and its run directory are left to the new owner. The worker's loop
(`autotune.search.study.workers.work`) catches it and moves on. A trial whose storage answer did
not come is then still RUNNING under this process: `reap` fails and re-queues it at once
(this process runs no trial while it reaps), and it is continued like any other.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

__all__ = ["Claim", "TrialTaken", "check", "claim", "current", "release", "still_mine"]

ASK_TIMEOUT_S = 5.0


class TrialTaken(BaseException):
    """This process's trial was taken over while it hung; it writes nothing more to it."""

    def __init__(self, number: int, why: str) -> None:
        super().__init__(f"trial {number} {why}; this worker leaves it to its new owner")
        self.number = number


@dataclass(frozen=True)
class Claim:
    """The trial this process runs: its number, id and the storage that holds it."""

    number: int
    trial_id: int
    storage: Any  # an Optuna storage


_current: Claim | None = None
_installed = False


def still_mine(c: Claim) -> bool:
    """Whether the storage still has the trial RUNNING (nobody failed it as stale): its
    state alone where the storage reads it so (`RetryingRDBStorage.trial_state`, under
    Optuna's cache), else the whole trial."""
    backend = getattr(c.storage, "_backend", c.storage)
    state_of = getattr(backend, "trial_state", None)
    state = state_of(c.trial_id) if state_of else c.storage.get_trial(c.trial_id).state
    return state == TrialState.RUNNING


def check(c: Claim | None) -> None:
    """Raise TrialTaken when the trial is no longer RUNNING in the storage."""
    if c is not None and not still_mine(c):
        raise TrialTaken(c.number, "is no longer running in the storage (it was failed as "
                                   "stale and re-queued)")


def _ask(c: Claim) -> bool | None:
    """`still_mine` in a helper thread, so that a signal handler that interrupted the main
    thread inside a storage call cannot wait for a lock the main thread holds; None when
    no answer came in time."""
    answer: list[bool | None] = [None]

    def ask() -> None:
        try:
            answer[0] = still_mine(c)
        except BaseException:  # noqa: BLE001 - an unknown answer is decided below
            answer[0] = None

    helper = threading.Thread(target=ask, daemon=True)
    helper.start()
    helper.join(ASK_TIMEOUT_S)
    return answer[0]


def _on_continue(signum: int, frame: object) -> None:
    c = _current
    if c is None:
        return
    mine = _ask(c)
    if mine is None:
        raise TrialTaken(c.number, "may have been taken over while this worker was stopped "
                                   "(the storage did not answer)")
    if not mine:
        raise TrialTaken(c.number, "was taken over while this worker was stopped")


def claim(trial: Any) -> Claim:
    """Note that this process now runs `trial` (an `optuna.Trial`) and, in the main thread,
    watch for SIGCONT; `release` ends it."""
    global _current, _installed
    c = Claim(trial.number, trial._trial_id, trial.study._storage)
    _current = c
    if not _installed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCONT, _on_continue)
        _installed = True
    return c


def current() -> Claim | None:
    return _current


def release() -> None:
    """This process runs no trial now."""
    global _current
    _current = None
