"""Search your own trainer from Python: `autotune.create_study` and `autotune.objective`.

    study = autotune.create_study(study_name="mine", storage="sqlite:///mine.db",
                                  load_if_exists=True)
    study.optimize(autotune.objective(build, epochs=20, run_root="runs/mine"), n_trials=30)

`build(trial)` samples with `trial.suggest_*` and returns an `autotune.Trainable`. Each
trial is run exactly as `autotune search` runs an ARC trial (`autotune.search.objective`,
one code path): a supervised run in its own folder under `run_root`, reported, pruned,
triaged and recorded. The study holds a plan (`StudyAttr.PLAN`,
`autotune.search.study.plan`) like a study of `autotune search`, with `kind: build`, so
`autotune export`, `report` and `resume --study` read it; `resume --study` can build
trials again when `build` can be imported (a module's top-level function), and otherwise
says to re-run the script.

`create_study` returns an `optuna.Study` whose sampler and pruner are autotune's wrappers
of the given ones (TPE and the median pruner by default). Its `optimize`, given autotune's
objective, records the study's requested number of trials (those finished before the call
plus `n_trials`, Optuna's meaning of `n_trials`), and re-checks the winner from scratch at
the end; it also passes over a trial that would exceed the requested number (two processes
racing for the last one). Re-running a script with `load_if_exists=True` first re-queues
the trials whose process died or was interrupted, so they continue from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autotune.recovery.settings import RecoveryMode
from autotune.search.factory import entry_of
from autotune.search.objective import Objective, ObjectiveSettings, SurplusTrial
from autotune.search.outcome import Winner, confirm
from autotune.search.pruner import TimelinePruner, default_pruner
from autotune.search.sampler import CreditSampler, CreditTPESampler
from autotune.search.setup import Build, OwnBuild, search_supervisor
from autotune.search.space import Space
from autotune.search.study.plan import StudyPlan
from autotune.search.study.storage import open_storage
from autotune.search.study.workers import reap
from autotune.search.tally import FINISHED, winner_of
from autotune.search.vocabulary import StudyAttr

__all__ = ["Study", "StudyObjective", "create_study", "objective"]


class StudyObjective(Objective):
    """The objective `autotune.objective` returns: `Objective` over a user's build, which
    stores the study's plan at its first trial."""

    def __init__(self, build: Build, epochs: int, run_root: Path, recovery: RecoveryMode,
                 max_recoveries: int) -> None:
        entry = entry_of(build)
        settings = ObjectiveSettings(Space(), "", run_root, {"epochs": epochs},
                                     recovery=recovery, kind="build", trainer=entry,
                                     max_recoveries=max_recoveries)
        name = entry or str(getattr(build, "__qualname__", "build"))
        supervisor = search_supervisor(recovery, max_recoveries)
        super().__init__(settings, build=OwnBuild(build, epochs, supervisor, name=name))
        self.epochs = epochs

    def plan(self, study: optuna.Study, trials: int | None = None) -> StudyPlan:
        """The study's plan for this objective, stored when the study has none (or asks
        for fewer trials than `trials`)."""
        s = self.settings
        stored = study.user_attrs.get(StudyAttr.PLAN)
        plan = StudyPlan(study=study.study_name, storage="", trials=trials or 0, space={},
                         profile="", epochs=self.epochs, artifacts=str(s.artifacts),
                         recovery=s.recovery.value, kind="build", trainer=s.trainer,
                         max_recoveries=s.max_recoveries)
        if isinstance(stored, dict):
            known = StudyPlan.from_stored(stored, study.study_name, "")
            if trials is None or known.trials >= trials:
                return known
            plan = replace(known, trials=trials)
        study.set_user_attr(StudyAttr.PLAN, plan.stored())
        return plan

    def __call__(self, trial: optuna.Trial) -> float:
        if StudyAttr.PLAN not in trial.study.user_attrs:  # a study of optuna.create_study
            self.plan(trial.study)
        return super().__call__(trial)


def objective(build: Build, *, epochs: int, run_root: str | Path,
              recovery: str | RecoveryMode = "on", max_recoveries: int = 4) -> StudyObjective:
    """The objective for `study.optimize`: every trial a supervised run of `build(trial)`.

    Args:
        build: samples with `trial.suggest_*` and returns an `autotune.Trainable`.
        epochs: epochs a trial trains (a trial's own `epochs` parameter wins).
        run_root: the folder of the trials' run directories (`trial-NNNN`), and of the
            winner's re-check.
        recovery: `on` (recover a diverging trial) or `off` (prune it with the reason).
        max_recoveries: recoveries a trial may make before it gives up (pruned).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1 but got {epochs!r}.")
    mode = RecoveryMode.parse(recovery)
    if mode not in (RecoveryMode.ON, RecoveryMode.OFF):
        raise ValueError(f"recovery must be on or off in a search but got {recovery!r}.")
    if not callable(build):
        raise TypeError(f"build must be a function of the trial but got "
                        f"{type(build).__name__}.")
    return StudyObjective(build, epochs, Path(run_root).resolve(), mode, max_recoveries)


class Study(optuna.Study):
    """An `optuna.Study` whose `optimize` knows autotune's objective (module docstring)."""

    def optimize(self, func: Callable[[optuna.Trial], Any], n_trials: int | None = None,
                 timeout: float | None = None, n_jobs: int = 1,
                 catch: Iterable[type[Exception]] | type[Exception] = (),
                 callbacks: Iterable[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
                 gc_after_trial: bool = False, show_progress_bar: bool = False) -> None:
        if not isinstance(func, StudyObjective):
            return super().optimize(func, n_trials, timeout, n_jobs, catch, callbacks,
                                    gc_after_trial, show_progress_bar)
        finished = sum(t.state in FINISHED for t in self.get_trials(deepcopy=False))
        plan = func.plan(self, None if n_trials is None else finished + n_trials)
        func.settings = replace(func.settings, target=plan.trials or None)
        catches = (catch,) if isinstance(catch, type) else tuple(catch)
        super().optimize(func, n_trials, timeout, n_jobs, (*catches, SurplusTrial), callbacks,
                         gc_after_trial, show_progress_bar)
        self.recheck(func)
        return None

    def recheck(self, func: StudyObjective) -> Winner | None:
        """Re-train the best stable trial's effective configuration from scratch with
        another seed (once per winner); None when no trial ended stable."""
        best = winner_of(self.get_trials(deepcopy=False))
        if best is None:
            return None
        return confirm(self, func.plan(self), best, build=func.build)


def create_study(*, storage: str | BaseStorage | None = None,
                 sampler: BaseSampler | None = None, pruner: BasePruner | None = None,
                 study_name: str | None = None,
                 direction: str | StudyDirection | None = None,
                 load_if_exists: bool = False,
                 directions: Sequence[str | StudyDirection] | None = None) -> Study:
    """`optuna.create_study`, with the sampler and pruner wrapped in autotune's.

    The sampler (TPE by default) learns that a sampled configuration diverged; the pruner
    (the median pruner by default) judges each trial on its surviving timeline. The
    objective minimises the validation loss, so `direction` is `minimize`. Loading an
    existing study re-queues the trials whose process died or was interrupted.
    """
    if directions is not None and [str(d).lower().split(".")[-1] for d in directions] != [
            "minimize"]:
        raise ValueError(f"an autotune study has one direction, minimize, but got "
                         f"directions={list(directions)!r}.")
    if direction is not None and str(direction).lower().split(".")[-1] != "minimize":
        raise ValueError(f"an autotune study minimises the validation loss: direction must "
                         f"be minimize but got {direction!r}.")
    if sampler is None:
        sampler = CreditTPESampler()
    elif not isinstance(sampler, (CreditSampler, CreditTPESampler)):
        sampler = CreditSampler(sampler)
    pruner = default_pruner() if pruner is None else (
        pruner if isinstance(pruner, TimelinePruner) else TimelinePruner(pruner))
    if storage is None:
        storage = optuna.storages.InMemoryStorage()
    elif not isinstance(storage, BaseStorage):
        storage = open_storage(storage)  # as `autotune search` opens it: heartbeat, retry
    created = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner,
                                  study_name=study_name, direction="minimize",
                                  load_if_exists=load_if_exists)
    study = Study(study_name=created.study_name, storage=storage, sampler=sampler,
                  pruner=pruner)
    reap(study)
    return study
