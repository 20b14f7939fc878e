"""Counting a study's trials: done, diverged, salvaged, pruned; and the winner."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autotune.events import RunStatus
from autotune.search.vocabulary import ARC_SCORES, NextAction, StudyAttr, TrialAttr

__all__ = ["FINISHED", "Tally", "finished_trials", "held_out_scores", "next_action", "tally",
           "winner_of"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# -- progress -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Tally:
    """Where a study stands."""

    done: int
    total: int
    running: int
    best_value: float | None
    best_trial: int | None
    diverged: int      # trials with at least one divergence
    recovered: int     # of those, trials that ended stable (salvaged)
    gave_up: int
    pruned: int
    failed: int


def finished_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count towards the requested number: complete or pruned."""
    return [t for t in trials if t.state in FINISHED]


def winner_of(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The best stable trial: complete, ended with no unrecovered divergence."""
    stable = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
              and t.user_attrs.get(TrialAttr.STABLE, True) and math.isfinite(t.value)]
    return min(stable, key=lambda t: (t.value, t.number)) if stable else None


def held_out_scores(study_attrs: Mapping[str, Any], trial: FrozenTrial) -> dict[str, float]:
    """A trial's held-out ARC scores: its own attributes (scored as it ended, `--held-out
    all`), else the study's record when it is the scored winner; {} when not scored."""
    own = {k: trial.user_attrs[k] for k in ARC_SCORES if trial.user_attrs.get(k) is not None}
    if own:
        return own
    record = study_attrs.get(StudyAttr.HELD_OUT) or {}
    if record.get("trial") != trial.number:
        return {}
    return {k: record[k] for k in ARC_SCORES if record.get(k) is not None}


def tally(trials: list[FrozenTrial], total: int) -> Tally:
    """Counts of a study's trials (a pure function of them)."""
    finished = finished_trials(trials)
    best = winner_of(trials)
    diverged = [t for t in finished if t.user_attrs.get(TrialAttr.DIVERGENCES, 0)]
    return Tally(
        done=len(finished), total=total,
        running=sum(t.state == TrialState.RUNNING for t in trials),
        best_value=best.value if best else None, best_trial=best.number if best else None,
        diverged=len(diverged),
        recovered=sum(bool(t.user_attrs.get(TrialAttr.STABLE)) for t in diverged),
        gave_up=sum(t.user_attrs.get(TrialAttr.STATUS) == RunStatus.GAVE_UP for t in finished),
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        failed=sum(t.state == TrialState.FAIL and not t.user_attrs.get(TrialAttr.SURPLUS)
                   for t in trials))


def next_action(target: int, finished: int, running: int, *, budget_spent: bool = False,
                continuations: int = 0) -> NextAction:
    """`run` a trial, `wait` (the rest are running elsewhere and may need taking over), or
    `stop` (the requested number finished, or the epoch budget is spent and nothing is
    left to continue). Once the budget is spent no fresh trial starts, but a killed trial
    queued to continue its run (`continuations`) still does."""
    if finished >= target:
        return NextAction.STOP
    if budget_spent:
        if continuations:
            return NextAction.RUN
        return NextAction.WAIT if running else NextAction.STOP
    if finished + running < target:
        return NextAction.RUN
    return NextAction.WAIT
