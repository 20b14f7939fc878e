"""Many machines without a database server: Optuna's journal file, with a heartbeat.

`--storage journal:PATH` keeps the study in an append-only journal file (Optuna's
`JournalStorage` on a `JournalFileBackend`), which every worker that sees the file (a
shared or network folder) appends to under a lock file (`JournalFileOpenLock`, which
works on NFSv3 and later).

Optuna gives a heartbeat to RDB storages only, so a trial whose worker died on another
machine would stay RUNNING for ever. `HeartbeatJournalStorage` adds one of its own and
speaks Optuna's heartbeat protocol (`BaseHeartbeat`), so the rest works unchanged:
Optuna's heartbeat thread beats for a running trial, `fail_stale_trials` (in `reap` and
before every trial) fails the stale ones, and `RetryHeartbeatStaleTrialCallback`
re-queues them to continue from their checkpoint.

- A beat is a trial system attribute `autotune:heartbeat` (the writer's clock and a
  counter), written every `interval` seconds while the trial runs.
- A reader never compares its clock with the writer's (machines' clocks differ): it
  notes, by its own monotonic clock, when it first saw each running trial's current beat;
  a trial whose beat has not changed for longer than the grace period is stale
  (`stale_trials`, a pure function). A trial that never beat counts from when the reader
  first saw it. So a worker judges a trial stale only after watching it for the grace
  period; `autotune resume --study` does the same.
- Failing a stale trial is a journal write; the journal applies the first of two
  workers' writes and tells the second that the trial was finished already, so a trial
  is re-queued once.

Local deaths are found sooner, as for any storage, by the "process gone" check of
`autotune.search.study.workers.reap`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from autotune.search.vocabulary import SystemAttr

__all__ = ["BEAT_ATTR", "PREFIX", "HeartbeatJournalStorage", "journal_path", "stale_trials"]

PREFIX = "journal:"
BEAT_ATTR = SystemAttr.HEARTBEAT

Seen = dict[int, tuple[Any, float]]  # trial id -> (beat, monotonic time first seen)


def journal_path(url: str) -> str | None:
    """The file of a `journal:PATH` storage, or None for any other URL."""
    return url[len(PREFIX):] if url.startswith(PREFIX) else None


def stale_trials(seen: Seen, beats: Mapping[int, Any], now: float,
                 grace: float) -> tuple[Seen, list[int]]:
    """(what to remember, the stale trial ids) given the running trials' current beats
    (None: never beat) and what was seen before, at monotonic time `now`."""
    remembered: Seen = {}
    for trial_id, beat in beats.items():
        before = seen.get(trial_id)
        remembered[trial_id] = before if before is not None and before[0] == beat \
            else (beat, now)
    stale = [i for i, (_, since) in remembered.items() if now - since > grace]
    return remembered, sorted(stale)


def _beats(trials: Iterable[FrozenTrial]) -> dict[int, Any]:
    return {t._trial_id: t.system_attrs.get(BEAT_ATTR) for t in trials
            if t.state == TrialState.RUNNING}


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with a heartbeat (see the module docstring)."""

    def __init__(self, path: str, *, interval: int, grace: int,
                 callback: Callable[[optuna.Study, FrozenTrial], None] | None) -> None:
        super().__init__(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        self._interval, self._grace, self._callback = interval, grace, callback
        self._seen: dict[int, Seen] = {}  # per study
        self._count = itertools.count()

    def record_heartbeat(self, trial_id: int) -> None:
        """Runs in Optuna's heartbeat thread: never raises."""
        try:
            if self.get_trial(trial_id).state == TrialState.RUNNING:
                self.set_trial_system_attr(trial_id, BEAT_ATTR,
                                           [round(time.time(), 3), next(self._count)])
        except Exception:
            return  # finished meanwhile, or the file is briefly unavailable

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        beats = _beats(self.get_all_trials(study_id, deepcopy=False,
                                           states=(TrialState.RUNNING,)))
        self._seen[study_id], stale = stale_trials(self._seen.get(study_id, {}), beats,
                                                   time.monotonic(), self._grace)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(
            self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._callback

