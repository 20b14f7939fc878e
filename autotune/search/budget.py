"""A study's compute budget in epochs (`autotune search --budget-epochs N`).

Compute is counted in epochs trained: every epoch of every trial, the epochs replayed after
a rollback included (the run's `global_epoch`, which never goes back), the winner's re-check
not (it is no trial). It is read from the study alone, so that every worker of a study,
on any machine, counts the same:

- a finished trial: its `global_epochs` attribute (the run's epochs of compute, written when
  it ends), or its highest report if it has none;
- a trial in flight: its highest report so far (reports are at global epochs). An epoch
  whose validation loss was not finite, or that diverged, is not reported, so until the
  next report or the trial's end it is not counted yet;
- a run continued by another trial (a killed trial retried from its checkpoint re-reports
  the epochs done before the kill): counted once, by its run directory (`run_dir`).

Pure functions of the trials; the worker loop (`autotune.search.workers`) and the
objective (`autotune.search.objective`) ask them before a trial starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from autotune.search.vocabulary import TrialAttr

__all__ = ["Budget", "study_epochs", "trial_epochs"]


def trial_epochs(trial: FrozenTrial) -> int:
    """The epochs of compute trial `trial`'s run has trained, as far as the study knows."""
    stored = trial.user_attrs.get(TrialAttr.GLOBAL_EPOCHS)
    reported = max((int(step) for step in trial.intermediate_values), default=0)
    if isinstance(stored, int) and not isinstance(stored, bool):
        return max(stored, reported)
    return reported


def study_epochs(trials: Iterable[FrozenTrial]) -> int:
    """The epochs of compute a study's trials have trained in all (each run once)."""
    per_run: dict[str, int] = {}
    for trial in trials:
        run = trial.user_attrs.get(TrialAttr.RUN_DIR)
        key = run if isinstance(run, str) and run else f"trial:{trial.number}"
        per_run[key] = max(per_run.get(key, 0), trial_epochs(trial))
    return sum(per_run.values())


@dataclass(frozen=True)
class Budget:
    """`--budget-epochs`: start no trial once the study's trials trained `epochs` epochs."""

    epochs: int | None
    """None: no budget."""

    def spent(self, trials: Iterable[FrozenTrial]) -> bool:
        return self.epochs is not None and study_epochs(trials) >= self.epochs

    def describe(self, trials: Iterable[FrozenTrial]) -> str:
        """"412 of 400 epochs trained": where the study stands against the budget."""
        return f"{study_epochs(trials)} of {self.epochs} epochs trained"
