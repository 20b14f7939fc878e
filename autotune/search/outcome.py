"""How a search ends: run the workers, pick the best stable trial, score it on ARC's
held-out pairs, re-check it.

The held-out scoring steers nothing (the search ranks trials by validation loss), so a
trial is scored as it ends only on request (`--held-out all`); otherwise the winner alone
is scored after the search, from its latest checkpoint (the weights it ended with), and
the scores go into its summary.json and the study's `held_out` attribute, where export,
report and `winner_info` read them (`tally.held_out_scores`). The re-check run is scored
as every `autotune train` run is."""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.events import changes_of
from autotune.jsonio import jsonable
from autotune.recovery.runs import RunConfig, score_run
from autotune.recovery.supervise import start
from autotune.search.arc import data_for
from autotune.search.budget import Budget, study_epochs
from autotune.search.objective import build_of
from autotune.search.salvage import Salvage, salvage_of
from autotune.search.setup import TrialBuild
from autotune.search.study.plan import StudyPlan, stored_plan
from autotune.search.study.storage import load_study, open_storage
from autotune.search.study.workers import open_study, reap, run_workers, threads_per_worker, work
from autotune.search.tally import FINISHED, Tally, held_out_scores, tally, winner_of
from autotune.search.vocabulary import (
    ARC_SCORES,
    EventSink,
    SearchEvent,
    SearchEventKind,
    StudyAttr,
    TrialAttr,
)
from trainer.inject import Injector
from trainer.loop import set_threads

# -- the search ---------------------------------------------------------------------------

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Winner:
    """The best stable trial and what survived in it."""

    number: int
    value: float
    params: dict[str, Any]
    effective: dict[str, Any]
    changes: dict[str, list[Any]]
    divergences: int
    recoveries: int
    run_dir: str | None
    confirmed: bool | None = None
    confirm_value: float | None = None
    confirm_run_dir: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    """Its held-out ARC scores (`test_pass2`, `test_pass1`, `test_copy_pass`)."""


@dataclass(frozen=True)
class SearchOutcome:
    """How a search ended."""

    study: str
    tally: Tally
    winner: Winner | None
    timed_out: bool = False
    workers: list[int] = field(default_factory=list)
    budget_spent: bool = False
    """The epoch budget bound before the requested number of trials."""
    epochs_trained: int = 0
    """The epochs of compute the study's trials trained in all (the re-check not)."""
    salvage: Salvage | None = None
    """What the diverged trials took and whether recovery salvaged the winner."""


def run_search(plan: StudyPlan, on_event: EventSink | None = None,
               timeout: float | None = None, confirm_winner: bool = True) -> SearchOutcome:
    """Run the study to its requested number of trials (or the timeout, or the epoch
    budget, whichever binds first), then re-check the winner from scratch."""
    emit = on_event or (lambda event: None)
    deadline = time.time() + timeout if timeout is not None else None
    Injector.from_env()  # a bad AUTOTUNE_INJECT is exit 2 before any trial is touched
    storage = open_storage(plan.storage)
    study = open_study(plan, 0, storage)
    counts = tally(study.get_trials(deepcopy=False), plan.trials)
    emit(SearchEvent(SearchEventKind.TALLY, None, asdict(counts)))
    codes: list[int] = []
    jobs = min(plan.jobs, max(1, plan.trials - counts.done))  # a worker a trial at most
    if jobs > 1:
        codes = run_workers(replace(plan, jobs=jobs), emit, deadline)
    # In-process: the only worker, or the one that finishes what dead workers left.
    set_threads(threads_per_worker(1))
    work(plan, 0, emit, deadline, storage)
    trials = study.get_trials(deepcopy=False)
    result = tally(trials, plan.trials)
    budget = Budget(plan.budget_epochs)
    spent = result.done < plan.trials and budget.spent(trials)
    timed_out = result.done < plan.trials and not spent
    epochs = study_epochs(trials)
    best = winner_of(trials)
    win = None
    if best is not None:
        if confirm_winner:
            score_winner(study, plan, best)
            win = confirm(study, plan, best, emit)
        else:
            win = winner_info(study, best)
    return SearchOutcome(plan.study, result, win, timed_out, codes, spent, epochs,
                         salvage_of(trials))


def resume(name: str, url: str | None, on_event: EventSink | None = None,
           jobs: int | None = None) -> SearchOutcome:
    """Continue an interrupted study to its requested number of trials."""
    study = load_study(name, url)
    plan = stored_plan(study, url)
    build_of(plan.objective_settings())  # a build that cannot be loaded: exit 2 first
    if jobs is not None:
        plan = replace(plan, jobs=jobs)
    if not plan.trials:  # a Python API study that never said how many: its interrupted ones
        reap(study)
        trials = study.get_trials(deepcopy=False)
        plan = replace(plan, trials=sum(t.state in (*FINISHED, TrialState.WAITING,
                                                    TrialState.RUNNING) for t in trials))
    return run_search(plan, on_event)


# -- the winner ---------------------------------------------------------------------------

def winner_info(study: optuna.Study, trial: FrozenTrial) -> Winner:
    """The Winner record of `trial`, with the stored confirmation when it is this trial's."""
    attrs = trial.user_attrs
    effective = attrs.get(TrialAttr.EFFECTIVE_CONFIG) or {}
    check = study.user_attrs.get(StudyAttr.CONFIRMATION) or {}
    mine = check.get("trial") == trial.number
    return Winner(number=trial.number, value=float(trial.value or math.nan),
                  params=dict(trial.params), effective=dict(effective),
                  changes=changes_of(attrs.get(TrialAttr.EVENTS, [])),
                  divergences=int(attrs.get(TrialAttr.DIVERGENCES, 0)),
                  recoveries=int(attrs.get(TrialAttr.RECOVERIES, 0)),
                  run_dir=attrs.get(TrialAttr.RUN_DIR),
                  confirmed=check.get("confirmed") if mine else None,
                  confirm_value=check.get("value") if mine else None,
                  confirm_run_dir=check.get("run_dir") if mine else None,
                  scores=held_out_scores(study.user_attrs, trial))


def score_winner(study: optuna.Study, plan: StudyPlan, trial: FrozenTrial) -> dict[str, Any]:
    """The winner's held-out ARC scores: its own when it was scored as it ended, else
    scored now from its run directory and stored (`StudyAttr.HELD_OUT`); {} when its run
    directory is gone. Only ARC studies' winners are scored afterwards (a user's trainer
    with `held_out_scores` scores each trial as it ends)."""
    scores = held_out_scores(study.user_attrs, trial)
    run_dir = trial.user_attrs.get(TrialAttr.RUN_DIR)
    if scores or plan.kind != "arc" or not run_dir or not Path(run_dir).is_dir():
        return scores
    config = RunConfig.from_dict(trial.user_attrs[TrialAttr.EFFECTIVE_CONFIG])
    scores = score_run(Path(run_dir), plan.device, data_for(config.train))
    study.set_user_attr(StudyAttr.HELD_OUT, jsonable(
        {"trial": trial.number, **{k: scores.get(k) for k in ARC_SCORES}}))
    return {k: scores[k] for k in ARC_SCORES if scores.get(k) is not None}


def confirm(study: optuna.Study, plan: StudyPlan | None, trial: FrozenTrial,
            on_event: EventSink | None = None, build: TrialBuild | None = None) -> Winner:
    """Re-train the winner's effective configuration from scratch with another seed (the
    plan's build, or `build`), in the study's artifacts folder.

    Confirmed when that run ends stable without a single divergence. The result is stored
    in the study's user attributes (`confirmed`, `confirmation`); a winner already checked
    is not checked again.
    """
    emit = on_event or (lambda event: None)
    done = study.user_attrs.get(StudyAttr.CONFIRMATION) or {}
    if done.get("trial") == trial.number:
        return winner_info(study, trial)
    assert plan is not None or build is not None
    setup = (build or build_of(plan.objective_settings())).recheck(trial)  # type: ignore[union-attr]
    seed = setup.config.get("seed")
    run_dir = trial.user_attrs.get(TrialAttr.RUN_DIR)
    artifacts = Path(plan.artifacts) if plan is not None else Path(str(run_dir)).parent
    path = artifacts / f"confirm-trial-{trial.number:04d}"
    try:
        path.mkdir(parents=True)  # atomic: of workers ending together, one gets this name
    except FileExistsError:
        # Another worker is checking this winner now, or an earlier check was interrupted:
        # never touch its folder; check in this process's own.
        path = path.with_name(f"{path.name}-{socket.gethostname()}-{os.getpid()}")
        if path.exists():
            shutil.rmtree(path)
    emit(SearchEvent(SearchEventKind.CONFIRM_START, trial.number,
                     {"seed": seed, "run_dir": str(path)}))
    result = start(setup.trainer, path, setup.epochs, setup.config, setup.supervisor,
                   holder=f"the re-check of trial {trial.number}")
    confirmed = result.stable and result.divergences == 0
    record = {"trial": trial.number, "confirmed": confirmed, "value": result.objective,
              "test_pass2": result.scores.get("test_pass2"),
              "seed": seed, "divergences": result.divergences,
              "status": result.status, "run_dir": str(path)}
    study.set_user_attr(StudyAttr.CONFIRMATION, jsonable(record))
    study.set_user_attr(StudyAttr.CONFIRMED, confirmed)
    emit(SearchEvent(SearchEventKind.CONFIRM_END, trial.number, jsonable(record)))
    return winner_info(study, trial)


def safe_sink(callback: Callable[[SearchEvent], None]) -> EventSink:
    """An event sink that ignores failures of the display (a search never dies of them)."""
    def sink(event: SearchEvent) -> None:
        try:
            callback(event)
        except Exception:  # a display bug must not kill a trial
            log.exception("progress display failed")
    return sink
