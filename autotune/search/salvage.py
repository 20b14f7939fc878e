"""What the trials that diverged cost a search, and what recovery got back for it.

A salvaged trial is worth its compute only if it changes the result. On the natural
late-divergence workload of BENCHMARKS.md ("Eighth session") recovery's version of a trial
ended better than plain Optuna's run of the same configuration 23 times in 25, for 13% more
epochs, yet a search gained only in the seeds where such a trial was its best; where the
diverged trials were worse configurations anyway (the high rates of the seventh session's
run), their epochs were lost to other trials. So the end of a search says both: the epochs
the diverged trials took, and whether the best salvaged trial is the winner. Whether the
search would have found a better one with those epochs is not known from one search; the
paired benchmark (`benchmarks/search_vs_optuna.py`) measures that.

A pure function of the study's trials; `autotune search` and `resume` print it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from autotune.search.budget import study_epochs
from autotune.search.tally import finished_trials, winner_of
from autotune.search.vocabulary import TrialAttr

__all__ = ["Salvage", "salvage_of"]


@dataclass(frozen=True)
class Salvage:
    """The diverged trials of a study: their cost, and the best that recovery salvaged."""

    diverged: int
    """Finished trials with at least one divergence."""
    diverged_epochs: int
    """The epochs of compute they trained, replays after a rollback included."""
    epochs: int
    """The epochs of compute all the study's trials trained."""
    salvaged: int
    """Of the diverged trials, those that ended stable."""
    best_trial: int | None = None
    """The best salvaged trial (None: none salvaged)."""
    best_value: float | None = None
    winner_trial: int | None = None
    winner_value: float | None = None

    @property
    def share(self) -> float:
        """The diverged trials' share of the study's compute."""
        return self.diverged_epochs / self.epochs if self.epochs else 0.0

    @property
    def salvaged_the_winner(self) -> bool:
        return self.best_trial is not None and self.best_trial == self.winner_trial

    def describe(self) -> str:
        """One line: what the diverged trials took, and where the best salvaged one ended."""
        head = (f"diverged trials took {self.diverged_epochs} of {self.epochs} epochs "
                f"({100 * self.share:.0f}%)")
        if self.best_trial is None:
            return f"{head}; none was salvaged"
        best = f"trial {self.best_trial} ({self.best_value:.4f})"
        if self.salvaged_the_winner:
            return f"{head}; {self.salvaged} salvaged, the best of them, {best}, is the winner"
        return (f"{head}; {self.salvaged} salvaged, the best of them, {best}, is not the "
                f"winner ({self.winner_value:.4f})")


def salvage_of(trials: Iterable[FrozenTrial]) -> Salvage:
    """What the diverged trials among `trials` cost and what recovery salvaged of them."""
    trials = list(trials)
    diverged = [t for t in finished_trials(trials)
                if t.user_attrs.get(TrialAttr.DIVERGENCES, 0)]
    # Salvaged: as `tally` counts them (ended stable); the best of them as `winner_of` picks.
    salvaged = sum(bool(t.user_attrs.get(TrialAttr.STABLE)) for t in diverged)
    best = winner_of(diverged)
    win = winner_of(trials)
    return Salvage(len(diverged), study_epochs(diverged), study_epochs(trials), salvaged,
                   best.number if best else None, best.value if best else None,
                   win.number if win else None, win.value if win else None)
