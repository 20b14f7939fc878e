"""Recover or prune: inside a search, a recovery competes with a fresh trial.

A recovery costs epochs; the alternative is to prune the diverged trial and let the sampler
draw a fresh one (TPE learns from the pruned trial's last reported value, as it would in
plain Optuna). The study knows what the rolled-back state is worth: the trial's best
validation loss up to the epoch it would roll back to, against the other finished trials
at that epoch of their timelines (the median pruner's comparison: its startup trials and
warmup epochs included). So:

- recover while the study cannot judge yet (the rollback goes to an epoch before the
  pruner's warmup, or fewer than its startup trials finished that far): the pruner would
  not stop such a trial either;
- recover a trial whose rolled-back state is competitive (its best so far at least as good
  as the median of the other trials at that epoch);
- prune one that is not.

`triage` is the pure decision; `peer_values` reads the peers off a study. The objective
records every decision in the trial's `triage` user attribute and the progress line.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autotune.events import fmt
from autotune.search.timeline import timeline_values
from autotune.search.vocabulary import PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_EPOCHS, TriageChoice

__all__ = ["Triage", "peer_values", "triage"]


@dataclass(frozen=True)
class Triage:
    """A recover-or-prune decision and why (stored as the trial's `triage` entries)."""

    choice: TriageChoice
    reason: str
    epoch: int
    """The logical epoch the recovery would roll back to."""
    best: float | None
    """The trial's best validation loss up to that epoch (None: none yet)."""
    median: float | None
    """The median of the other finished trials at that epoch (None: not judged)."""
    peers: int

    @property
    def recover(self) -> bool:
        return self.choice is TriageChoice.RECOVER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def triage(epoch: int, best: float, peers: Sequence[float], *,
           startup: int = PRUNER_STARTUP_TRIALS,
           warmup: int = PRUNER_WARMUP_EPOCHS) -> Triage:
    """Recover or prune a trial whose recovery would roll back to logical `epoch`, where its
    best validation loss so far is `best`, given the other finished trials' values at that
    epoch (`peers`)."""
    finite = [float(v) for v in peers if math.isfinite(v)]
    shown_best = float(best) if math.isfinite(best) else None
    n = len(finite)
    if epoch < warmup:
        why = (f"too early to judge: it rolls back to epoch {epoch}, before the pruner's "
               f"{warmup} warmup epochs")
        return Triage(TriageChoice.RECOVER, why, epoch, shown_best, None, n)
    if n < startup:
        why = (f"too early to judge: {n} other finished trial(s) reached epoch {epoch}, "
               f"fewer than the pruner's {startup}")
        return Triage(TriageChoice.RECOVER, why, epoch, shown_best, None, n)
    median = statistics.median(finite)
    if shown_best is not None and shown_best <= median:
        why = (f"competitive: its best val_loss {fmt(best, '.4f')} up to epoch {epoch} is at "
               f"least as good as the median {fmt(median, '.4f')} of {n} other trials there")
        return Triage(TriageChoice.RECOVER, why, epoch, shown_best, median, n)
    why = (f"not competitive: its best val_loss {fmt(best, '.4f')} up to epoch {epoch} is "
           f"worse than the median {fmt(median, '.4f')} of {n} other trials there, so a "
           f"fresh trial is the better use of the budget")
    return Triage(TriageChoice.PRUNE, why, epoch, shown_best, median, n)


def peer_values(trials: Iterable[FrozenTrial], number: int, epoch: int) -> list[float]:
    """The validation loss at logical `epoch` of every COMPLETE trial but `number` that
    reached it (on its surviving timeline), as the median pruner reads its peers."""
    out = []
    for t in trials:
        if t.number == number or t.state != TrialState.COMPLETE:
            continue
        value = timeline_values(t).get(int(epoch))
        if value is not None:
            out.append(float(value))
    return out
