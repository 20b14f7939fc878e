"""Recover or prune: inside a search, a recovery competes with a fresh trial.

A recovery costs epochs; the alternative is to prune the diverged trial and let the sampler
draw a fresh one (TPE learns from the pruned trial's last reported value, as it would in
plain Optuna). Both are bets on beating the study's best, and the study says what each is
worth:

- recover while the study cannot judge yet: the rollback goes to an epoch before the
  pruner's warmup (the pruner would not stop such a trial either), or no other trial
  finished that far (`TRIAGE_MIN_PEERS`);
- otherwise weigh the chance of a new best per epoch of compute:
  - a recovery costs the epochs still to run after the rollback (the replay and the rest of
    the plan); its chance is `q ** n`, where `n` is the number of other finished trials at
    the rollback epoch (their values on their surviving timelines: the median pruner's
    peers) and `q` the share of them the trial's best so far beats there (ties count half;
    smoothed, `(beaten + 1) / (n + 2)`). That reads the rank at the rollback epoch as the
    rank at the end, which is what the median pruner assumes too;
  - a fresh trial costs what a finished trial cost on average (epochs of compute, pruned
    ones included); its chance of beating the best of `N` finished trials is `1 / (N + 1)`
    (a draw like theirs is the best of `N + 1` that often; unsmoothed, `q ** n` averages
    to the same for a trial at a random rank);
  - recover when the recovery's chance per epoch is at least the fresh trial's (a recovery
    with nothing left to run costs nothing and is always taken); prune otherwise.

So a trial ahead of its peers is recovered even early, one at the median only when little
is left to run, one behind them is pruned. With one worker the old rule (recover at or
below the median) recovered in every case, because the median pruner had asked the same
question at every reported epoch; the cost is what makes the difference now.

`triage` is the pure decision; `peer_values` and `fresh_trial` read the study. The objective
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
from autotune.search.budget import trial_epochs
from autotune.search.timeline import timeline_values
from autotune.search.vocabulary import PRUNER_WARMUP_EPOCHS, TRIAGE_MIN_PEERS, TriageChoice

__all__ = ["FreshTrial", "Triage", "fresh_trial", "peer_values", "triage", "win_chance"]


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
    remaining: int | None = None
    """Epochs a recovery would still run (replay and the rest of the plan)."""
    recover_chance: float | None = None
    """The recovered trial's estimated chance of beating the study's best."""
    fresh_chance: float | None = None
    """A fresh trial's estimated chance of beating the study's best."""
    fresh_epochs: float | None = None
    """What a fresh trial costs, in epochs (the finished trials' mean)."""

    @property
    def recover(self) -> bool:
        return self.choice is TriageChoice.RECOVER

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FreshTrial:
    """What the study says a fresh trial is worth: its cost and its chance."""

    finished: int
    """Finished trials (complete or pruned) other than the one being triaged."""
    epochs: float
    """Epochs of compute a finished trial cost on average (the plan's when none)."""

    @property
    def chance(self) -> float:
        """The chance that a fresh trial beats the best of the finished ones."""
        return 1.0 / (self.finished + 1)


def win_chance(best: float, peers: Sequence[float]) -> float:
    """`q ** n`: the chance that a trial whose best so far is `best` ends better than all
    `n` peers, reading its rank among their values at that epoch as its rank at the end."""
    n = len(peers)
    if not math.isfinite(best):
        return 0.0
    beaten = sum(1.0 if best < v else 0.5 if best == v else 0.0 for v in peers)
    return ((beaten + 1.0) / (n + 2.0)) ** n


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def triage(epoch: int, best: float, peers: Sequence[float], *, remaining: int,
           fresh: FreshTrial, min_peers: int = TRIAGE_MIN_PEERS,
           warmup: int = PRUNER_WARMUP_EPOCHS) -> Triage:
    """Recover or prune a trial whose recovery would roll back to logical `epoch` and then
    run `remaining` more epochs, where its best validation loss so far is `best`, given the
    other finished trials' values at that epoch (`peers`) and what a fresh trial is worth
    (`fresh`)."""
    finite = [float(v) for v in peers if math.isfinite(v)]
    shown_best = float(best) if math.isfinite(best) else None
    n = len(finite)
    if epoch < warmup:
        why = (f"too early to judge: it rolls back to epoch {epoch}, before the pruner's "
               f"{warmup} warmup epochs")
        return Triage(TriageChoice.RECOVER, why, epoch, shown_best, None, n, remaining)
    if n < min_peers:
        why = (f"too early to judge: {n} other finished trial(s) reached epoch {epoch}, "
               f"fewer than {min_peers}")
        return Triage(TriageChoice.RECOVER, why, epoch, shown_best, None, n, remaining)
    median = statistics.median(finite)
    mine = win_chance(best, finite)
    against = fresh.chance
    ahead = shown_best is not None and shown_best <= median
    where = (f"its best val_loss {fmt(best, '.4f')} up to epoch {epoch} is "
             f"{'at least as good as' if ahead else 'worse than'} the median "
             f"{fmt(median, '.4f')} of {n} other trials there")
    if remaining <= 0:
        cost = "nothing is left to run after the rollback"
        pays = True
    else:
        per_epoch, fresh_per_epoch = mine / remaining, against / max(fresh.epochs, 1e-9)
        cost = (f"recovering runs {remaining} more epoch(s) for a {_pct(mine)} chance of "
                f"beating the best ({_pct(per_epoch)} an epoch), a fresh trial about "
                f"{fresh.epochs:.1f} epochs for {_pct(against)} ({_pct(fresh_per_epoch)} an "
                f"epoch)")
        pays = per_epoch >= fresh_per_epoch
    if pays:
        choice, why = TriageChoice.RECOVER, f"competitive: {where}; {cost}"
    else:
        choice, why = TriageChoice.PRUNE, (f"not competitive: {where}; {cost}, so a fresh "
                                           f"trial is the better use of the budget")
    return Triage(choice, why, epoch, shown_best, median, n, remaining, mine, against,
                  fresh.epochs)


def fresh_trial(trials: Iterable[FrozenTrial], number: int, planned: int) -> FreshTrial:
    """What a fresh trial is worth in this study: the finished trials other than `number`,
    and the epochs of compute they cost on average (`planned` when none finished)."""
    done = [t for t in trials if t.number != number
            and t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    cost = [trial_epochs(t) for t in done]
    return FreshTrial(len(done), statistics.fmean(cost) if cost and sum(cost) else planned)


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
