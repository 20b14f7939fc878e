"""The search's vocabulary: event kinds, attribute keys, triage and worker choices.

Every name the search writes into a study (user and system attribute keys), sends to a
display (`SearchEvent.kind`) or decides between (recover or prune; run, wait or stop) is
owned here, so that `search`, `report` and `cli` read and write the same strings. The
values are the strings study files already hold: renaming one would orphan every study a
user has, so a value here never changes (`tests/search/test_vocabulary.py` pins them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

__all__ = ["ARC_SCORES", "CONSTRAINT", "PRUNER_STARTUP_TRIALS", "PRUNER_WARMUP_EPOCHS",
           "TRIAGE_MIN_PEERS", "EventSink", "NextAction", "SearchEvent", "SearchEventKind",
           "StudyAttr", "SystemAttr", "TrialAttr", "TriageChoice"]


class SearchEventKind(str, Enum):
    """What a `SearchEvent` reports (the CLI renders each kind from a table)."""

    TRIAL_START = "trial_start"
    EPOCH = "epoch"
    RECOVERY = "recovery"
    TRIAGE = "triage"
    TRIAL_END = "trial_end"
    TALLY = "tally"
    TAKEN = "taken"
    """This worker hung and its trial went to another."""
    RETRY = "retry"
    """A trial whose process is gone was re-queued."""
    ERROR = "error"
    """A worker process ended with an error (sent to its parent, not rendered)."""
    CONFIRM_START = "confirm_start"
    CONFIRM_END = "confirm_end"


@dataclass(frozen=True)
class SearchEvent:
    """Something a search did, for a progress display (picklable: workers send them as
    JSON lines, so `kind` is read back from its string)."""

    kind: SearchEventKind
    trial: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SearchEventKind(self.kind))


EventSink = Callable[[SearchEvent], None]


class TriageChoice(str, Enum):
    """Recover a diverged trial, or prune it and let the sampler draw a fresh one."""

    RECOVER = "recover"
    PRUNE = "prune"


class NextAction(str, Enum):
    """What a worker does next (`autotune.search.tally.next_action`)."""

    RUN = "run"
    """Run a trial."""
    WAIT = "wait"
    """The remaining trials run elsewhere; one of them may die and need taking over."""
    STOP = "stop"
    """The requested number of trials finished."""


class TrialAttr:
    """Keys of a trial's user attributes."""

    # What the run ended with (`autotune.search.dashboard.TrialStory.attrs`).
    EFFECTIVE_CONFIG: Final = "effective_config"
    EVENTS: Final = "events"
    """Compact events: the fields exports and plots read."""
    CHANGES: Final = "changes"
    REASONS: Final = "reasons"
    DIVERGENCES: Final = "divergences"
    RECOVERIES: Final = "recoveries"
    BATCH_SKIPS: Final = "batch_skips"
    """Of the divergences, those recovery put down to their batch (not the configuration's)."""
    ROLLED_BACK_STEPS: Final = "rolled_back_steps"
    STATUS: Final = "status"
    STABLE: Final = "stable"
    BEST_EPOCH: Final = "best_epoch"
    GLOBAL_EPOCHS: Final = "global_epochs"
    PRUNED_REASON: Final = "pruned_reason"
    # How the trial ran.
    RUN_DIR: Final = "run_dir"
    WORKER: Final = "worker"
    """{"host", "pid"} of the process that runs it."""
    TIMELINE: Final = "timeline"
    """[[global_epoch, epoch], ...] of the reports still on the run's timeline."""
    TRIAGE: Final = "triage"
    """Every recover-or-prune decision, with its reason."""
    CREDIT: Final = "credit"
    CREDIT_OF: Final = "credit_of"
    """On a queued trial: the recovered trial whose effective parameters it trains."""
    STAND_IN_FOR: Final = "stand_in_for"
    # Faults and retries.
    SURPLUS: Final = "surplus"
    """Beyond the requested number of trials (a race for the last slot): left out."""
    INTERRUPTED: Final = "interrupted"
    FAULT: Final = "fault"
    RETRY_OF: Final = "retry_of"


ARC_SCORES: Final = ("test_pass2", "test_pass1", "test_copy_pass")
"""Trial attributes: the held-out ARC scores of a stable run."""


class StudyAttr:
    """Keys of a study's user attributes."""

    PLAN: Final = "autotune_plan"
    """The validated flags (`autotune.search.study.plan.StudyPlan.stored`)."""
    CONFIRMATION: Final = "confirmation"
    """The re-check of the winner from scratch."""
    CONFIRMED: Final = "confirmed"
    HELD_OUT: Final = "held_out"
    """The winner's held-out ARC scores: {"trial": n, "test_pass2": ...}."""


CONSTRAINT: Final = "diverged"
"""The trial constraint (`Trial.set_constraint`): 0 for a trial that ended stable."""


class SystemAttr:
    """Keys of system attributes autotune writes or reads."""

    HEARTBEAT: Final = "autotune:heartbeat"
    """A journal-file trial's last heartbeat (`autotune.search.study.journal`)."""
    CONSTRAINT: Final = f"constraints:{CONSTRAINT}"
    """Where Optuna 5 stores `set_constraint`."""


PRUNER_STARTUP_TRIALS: Final = 5
"""The median pruner judges once this many trials the sampler drew finished."""
TRIAGE_MIN_PEERS: Final = 1
"""Triage weighs a recovery once this many other trials finished past its rollback epoch
(its smoothing, `(beaten + 1) / (n + 2)`, keeps a verdict on few peers cautious); with the
pruner's 5 it said "too early to judge" in almost every decision of a six-trial search
(BENCHMARKS.md, seventh and tenth sessions)."""
PRUNER_WARMUP_EPOCHS: Final = 2
"""The median pruner judges from this epoch; triage recovers every rollback before it."""
