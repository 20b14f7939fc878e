"""The Optuna objective: one trial is one supervised run; what survived is recorded.

A trial samples its configuration (`space`), trains it under the supervisor in its own run
directory with `recorder`'s hooks (report, prune, recover or prune), and records what
survived: the effective configuration and a compact recovery summary as user attributes
(`vocabulary.TrialAttr`), the constraint `diverged` (0 when it ended stable), the full
history as an artifact and a note (`dashboard`), and credit for a tamed configuration
(`credit`). It keeps invariants 3, 4 and 5 (docs/ARCHITECTURE.md); why each choice is as
it is, with the measurements behind it: docs/decisions.md, "One trial in Optuna".

The trial's trainer comes from its build (`autotune.search.setup`): the ARC trainer over a
space (`autotune search`, `autotune.search.arc`), a user's `build(trial)`
(`autotune.objective`) or a user's `FACTORY(hparams)` (`autotune search --trainer`,
`autotune.search.factory`); every one runs the same way.
"""

from __future__ import annotations

import math
import os
import socket
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import ConfigError, Interrupted
from autotune.events import Event, EventKind, RunStatus, changes_of, count
from autotune.jsonio import as_float, jsonable
from autotune.recovery import checkpoint_files
from autotune.recovery.lock import run_lock
from autotune.recovery.rundir import CONFIG, RunDir
from autotune.recovery.settings import RecoveryMode, split
from autotune.recovery.supervise import check_resumable, continue_run, start
from autotune.recovery.supervisor import RunResult
from autotune.search.arc import ArcBuild
from autotune.search.budget import Budget
from autotune.search.credit import credit_params, deserves_credit, restarted_from_scratch
from autotune.search.dashboard import TrialStory, publish, rolled_back_steps, store_dir
from autotune.search.factory import FactoryBuild, load
from autotune.search.recorder import TrialRecorder
from autotune.search.setup import OwnBuild, TrialBuild, TrialSetup, search_supervisor, space_of
from autotune.search.space import Space
from autotune.search.vocabulary import (
    ARC_SCORES,
    CONSTRAINT,
    EventSink,
    SearchEvent,
    SearchEventKind,
    TrialAttr,
)

# EventSink and SearchEvent belong to `vocabulary`; they stay importable from here, where
# callers found them before.
__all__ = ["EventSink", "Objective", "ObjectiveSettings", "SearchEvent", "SurplusTrial",
           "build_of", "is_surplus", "record_story", "set_user_attrs"]


@dataclass(frozen=True)
class ObjectiveSettings:
    """What every trial of a study shares."""

    space: Space
    profile: str
    artifacts: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    """Flags that win over the space's fixed values (`--epochs`)."""
    device: str = "auto"
    target: int | None = None
    """The study's requested number of trials: no trial beyond it runs."""
    credit: bool = True
    """Give a recovered trial's effective configuration credit: a queued trial, or a
    stand-in the sampler sees (docs/decisions.md)."""
    recovery: RecoveryMode = RecoveryMode.ON
    """`off`: a diverged trial is stopped and pruned with its reason, nothing recovered
    (`autotune search --recovery off`, the baseline users compare with)."""
    triage: bool = True
    """Recover a diverged trial only when its rolled-back state is competitive, prune it
    otherwise (`autotune.search.triage`); False recovers every one."""
    kind: str = "arc"
    """What trains: `arc` (our trainer over `space`), `factory` (`trainer` names a user's
    FACTORY(hparams), `space` is over its keys) or `build` (`trainer` names a user's
    importable build(trial); None when it cannot be imported)."""
    trainer: str | None = None
    """MODULE:NAME of the factory or build."""
    max_recoveries: int = 4
    held_out: str = "winner"
    """`all`: score every stable trial on ARC's held-out test pairs as it ends (about a
    second each on the tiny profile); `winner`: only the winner, after the search
    (`autotune.search.outcome.score_winner`)."""
    budget: Budget = field(default_factory=lambda: Budget(None))
    """The study's compute budget in epochs: no fresh trial starts once it is spent (a
    retried trial still continues its run)."""


def build_of(settings: ObjectiveSettings) -> TrialBuild:
    """The build the settings describe (ConfigError when it cannot be loaded)."""
    s = settings
    supervisor = search_supervisor(s.recovery, s.max_recoveries)
    if s.kind == "arc":
        return ArcBuild(s.space, s.profile, s.overrides, s.device, supervisor)
    if s.kind == "factory" and s.trainer is not None:
        return FactoryBuild(s.trainer, s.space, s.overrides.get("epochs"), supervisor)
    if s.kind == "build" and s.trainer is not None:
        return OwnBuild(load(s.trainer, "build"), int(s.overrides.get("epochs") or 0),
                        supervisor, name=s.trainer)
    raise ConfigError(f"the study's trials are built by a function that cannot be imported "
                      f"(defined in a script run as __main__, or not at a module's top "
                      f"level); re-run that script (autotune.create_study(..., "
                      f"load_if_exists=True)) to continue it, or define build(trial) in a "
                      f"module (kind {s.kind!r}, trainer {s.trainer!r}).")


class SurplusTrial(Exception):
    """A trial that would exceed the requested number (two workers raced for the last
    slot), or a fresh trial popped once the epoch budget is spent (a trial queued for
    credit); it ends FAILED without training and is left out of exports."""


# -- pure decisions -----------------------------------------------------------------------

def is_surplus(trials: Iterable[FrozenTrial], number: int, target: int) -> bool:
    """Whether trial `number` is beyond the `target`-th trial that holds a slot (finished,
    running or queued: every state but FAIL), counting in trial-number order."""
    holders = [t for t in trials if t.number < number and t.state != TrialState.FAIL]
    return len(holders) >= target


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Set several user attributes: in one transaction where the storage can
    (`RetryingRDBStorage.set_trial_user_attrs`), else one call a key."""
    backend = getattr(trial.storage, "_backend", trial.storage)  # under Optuna's cache
    batch = getattr(backend, "set_trial_user_attrs", None)
    if batch is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    batch(trial._trial_id, dict(attrs))
    trial._cached_frozen_trial.user_attrs.update(attrs)  # what trial.user_attrs shows


def record_story(trial: optuna.Trial, story: TrialStory, extra: Mapping[str, Any],
                 store: Path) -> None:
    """Store a finished trial's compact summary (with `extra` attributes) and its
    constraint; when it has a recovery history, also the history as an artifact in the
    file store `store` and a note (`autotune.search.dashboard`). Nothing reads these
    while the trial runs, so they are written at its end, in one transaction."""
    set_user_attrs(trial, {**story.attrs(), **jsonable(dict(extra))})
    trial.set_constraint(CONSTRAINT, float(story.unrecovered))
    if story.has_story():
        publish(trial, story, store)


def _earlier_workers(trial: optuna.Trial, trials: list[FrozenTrial]) -> list[tuple[str, int]]:
    """(host, pid) of the workers that ran the trials this one retries (dead or hung: the
    study took their trial away, so their hold on its run directory goes with it), out of
    the study's `trials` (read by the caller)."""
    history = set(_frozen(trial, trials).system_attrs.get("retry_history", []))
    out = []
    for t in trials:
        worker = t.user_attrs.get("worker") or {}
        if t.number in history and isinstance(worker, dict) and "pid" in worker:
            out.append((str(worker.get("host")), int(worker["pid"])))
    return out


def _frozen(trial: optuna.Trial, trials: list[FrozenTrial]) -> FrozenTrial:
    """`trial` as stored, out of the study's `trials` (read by the caller)."""
    return next(t for t in trials if t.number == trial.number)


def _retried_from(frozen: FrozenTrial) -> int | None:
    """The number of the killed trial that `frozen` continues, or None for a fresh one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)


# -- one trial ----------------------------------------------------------------------------
class Objective:
    """Callable objective for `study.optimize`: one trial, as the module docstring says."""

    def __init__(self, settings: ObjectiveSettings, on_event: EventSink | None = None,
                 build: TrialBuild | None = None) -> None:
        self.settings = settings
        self.emit: EventSink = on_event or (lambda event: None)
        self.build = build if build is not None else build_of(settings)

    def __call__(self, trial: optuna.Trial) -> float:
        s = self.settings
        trials = trial.study.get_trials(deepcopy=False)
        if s.target is not None and is_surplus(trials, trial.number, s.target):
            trial.set_user_attr(TrialAttr.SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} is beyond the requested {s.target}")
        if s.budget.spent(trials) and _retried_from(_frozen(trial, trials)) is None:
            trial.set_user_attr(TrialAttr.SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} would start after the epoch budget: "
                               f"{s.budget.describe(trials)}")
        trial.set_user_attr(TrialAttr.WORKER, {"host": socket.gethostname(), "pid": os.getpid()})
        if trial.user_attrs.get(TrialAttr.INTERRUPTED):  # a retry inherits its attributes
            trial.set_user_attr(TrialAttr.INTERRUPTED, False)
        run_path, resuming = self._run_path(trial, trials)
        # Trial n meets the rate faults of stream n (a retry those of the trial it retries).
        stream = int(trial.user_attrs.get(TrialAttr.RETRY_OF, trial.number))
        setup = self.build.setup(trial, stream)
        params = dict(trial.params)
        trial.set_user_attr(TrialAttr.RUN_DIR, str(run_path))
        recorder = TrialRecorder(trial, run_path, self.emit, s.triage)
        self.emit(SearchEvent(SearchEventKind.TRIAL_START, trial.number, {
            "params": jsonable(params), "resumed": resuming, "run_dir": str(run_path),
            "epochs": setup.epochs}))
        try:
            try:
                earlier = _earlier_workers(trial, trials) if resuming else []
                result = self._run(setup, run_path, resuming, recorder, earlier)
            except optuna.TrialPruned:
                self._record_pruned(trial, recorder)
                raise
            # An interrupt while the result is recorded leaves the trial resumable too: its
            # retry finds the finished run's summary and records it (`_run`).
            return self._finish(trial, params, result, recorder)
        except (KeyboardInterrupt, Interrupted):
            trial.set_user_attr(TrialAttr.INTERRUPTED, True)  # `resume --study` retries it
            raise

    # -- running -------------------------------------------------------------------------

    def _run_path(self, trial: optuna.Trial,
                  trials: list[FrozenTrial]) -> tuple[Path, bool]:
        """The trial's run directory, and whether it continues a killed trial's run
        (`trials`: the study's, read as this trial started)."""
        frozen = _frozen(trial, trials)
        origin = _retried_from(frozen)
        if origin is not None:
            trial.set_user_attr(TrialAttr.RETRY_OF, origin)
            inherited = frozen.user_attrs.get(TrialAttr.RUN_DIR)
            if inherited and (Path(inherited) / CONFIG).is_file() and (
                    checkpoint_files.listing(Path(inherited) / "checkpoints")
                    or RunDir(Path(inherited)).summary() is not None):
                return Path(inherited), True
        return Path(self.settings.artifacts) / f"trial-{trial.number:04d}", False

    def _run(self, setup: TrialSetup, run_path: Path, resuming: bool,
             recorder: TrialRecorder, earlier: list[tuple[str, int]]) -> RunResult:
        """Train the trial, or continue a killed trial's run (`earlier`: the workers that
        held it, whose lock on the run directory goes with their trial)."""
        hooks = recorder.hooks()
        trial = recorder.trial
        holder = f"trial {trial.number} of study {trial.study.study_name}"
        if not resuming:
            return start(setup.trainer, run_path, setup.epochs, setup.config,
                         setup.supervisor, hooks=hooks, holder=holder, score=self.scores)
        run = RunDir.open(run_path)
        summary = run.summary()
        if summary is not None:  # killed after the run ended, before Optuna heard of it
            recorder.replay()
            return _result_of(summary, run.events())
        # The run's own settings (as it started, or as a resume changed them) go on.
        check_resumable(run)
        _, settings = split(run.effective_config())
        with run_lock(run_path, holder, earlier):
            return continue_run(setup.trainer, run, None, settings, hooks=hooks,
                                score=self.scores)

    @property
    def scores(self) -> bool:
        """Whether a trial is scored on the held-out pairs as it ends: an ARC trial only
        with `held_out` all (else only the winner is, after the search); a user's trainer
        that has `held_out_scores` always (nothing scores it afterwards)."""
        return self.settings.kind != "arc" or self.settings.held_out == "all"

    # -- recording -----------------------------------------------------------------------

    def _record(self, trial: optuna.Trial, recorder: TrialRecorder,
                config: Mapping[str, Any], events: list[Event], status: str,
                extra: Mapping[str, Any]) -> TrialStory:
        """Store the trial's compact summary, its constraint, and (when it has a recovery
        history) the history as an artifact and a note."""
        rolled_back = (rolled_back_steps(recorder.reported, recorder.timeline)
                       if recorder.synced else [])
        story = TrialStory(number=trial.number, status=status,
                           stable=bool(extra.get(TrialAttr.STABLE)), params=dict(trial.params),
                           effective=dict(config), events=list(events),
                           rolled_back=rolled_back,
                           timeline=recorder.timeline if recorder.synced else None,
                           pruned_reason=extra.get(TrialAttr.PRUNED_REASON))
        record_story(trial, story, extra, store_dir(self.settings.artifacts))
        return story

    def _record_pruned(self, trial: optuna.Trial, recorder: TrialRecorder) -> None:
        run = RunDir(recorder.run_path)
        config = (recorder.supervisor.effective_config if recorder.supervisor
                  else run.effective_config())
        events = run.events()
        # Epochs of compute, a partial epoch that diverged at a step included.
        trained = (recorder.supervisor.global_epoch if recorder.supervisor
                   else max((int(r["global_epoch"]) for r in run.metrics()), default=0))
        self._record(trial, recorder, config, events, "pruned",
                     {TrialAttr.STABLE: False, TrialAttr.PRUNED_REASON: recorder.pruned_reason,
                      TrialAttr.GLOBAL_EPOCHS: trained})
        self.emit(SearchEvent(SearchEventKind.TRIAL_END, trial.number, {
            "state": "PRUNED", "value": None, "stable": False,
            "reason": recorder.pruned_reason,
            "divergences": count(events, EventKind.DIVERGED),
            "recoveries": count(events, EventKind.RECOVERED)}))

    def _finish(self, trial: optuna.Trial, params: dict[str, Any], result: RunResult,
                recorder: TrialRecorder) -> float:
        value = result.objective
        extra: dict[str, Any] = {TrialAttr.STABLE: result.stable,
                                 TrialAttr.BEST_EPOCH: result.best_epoch,
                                 TrialAttr.GLOBAL_EPOCHS: result.global_epochs,
                                 **{k: result.scores[k] for k in ARC_SCORES
                                    if k in result.scores}}
        reason = None
        if not result.stable:
            gave_up = next((e for e in reversed(result.events)
                            if e.kind is EventKind.GAVE_UP), None)
            last = next((e for e in reversed(result.events)
                         if e.kind is EventKind.DIVERGED), None)
            reason = (f"recovery budget spent: {gave_up.explanation}" if gave_up
                      else f"diverged ({last.reason if last else result.status.value}) and "
                           f"not recovered: recovery is {self.settings.recovery.value}")
        elif not math.isfinite(value):
            reason = "no finite validation loss"
        if reason is not None:
            extra[TrialAttr.PRUNED_REASON] = reason
        self._record(trial, recorder, result.config, result.events, result.status.value,
                     extra)
        credit = None
        if reason is None and result.recoveries:
            credit = self._credit(trial, params, result, value)
            trial.set_user_attr(TrialAttr.CREDIT, credit)
        self.emit(SearchEvent(SearchEventKind.TRIAL_END, trial.number, {
            "state": "PRUNED" if reason else "COMPLETE",
            "value": None if reason else value, "stable": result.stable, "reason": reason,
            "divergences": result.divergences, "recoveries": result.recoveries,
            "changes": jsonable(changes_of(result.events)), "credit": credit}))
        if reason is not None:
            raise optuna.TrialPruned(reason)
        return value

    def _credit(self, trial: optuna.Trial, params: dict[str, Any], result: RunResult,
                value: float) -> dict[str, Any]:
        """Enqueue the effective parameters of a recovered trial that did well, if it fits."""
        s = self.settings
        effective = result.config
        if not s.credit:
            return {"enqueued": False, "reason": "credit off"}
        space = space_of(trial.distributions)  # the parameters the trial sampled
        if restarted_from_scratch(space, result.events):
            reason = ("restarted from its initial weights: this trial is already a "
                      "from-scratch run of its effective configuration")
            credited, why = credit_params(space, params, effective)
            if credited is None:
                return {"enqueued": False, "stand_in": False, "reason": f"{reason}; {why}"}
            return {"enqueued": False, "stand_in": True, "params": jsonable(credited),
                    "reason": f"{reason}, which the sampler sees with this trial's value"}
        trials = trial.study.get_trials(deepcopy=False)
        stable = [t.value for t in trials if t.state == TrialState.COMPLETE
                  and t.user_attrs.get(TrialAttr.STABLE) and t.value is not None]
        if not deserves_credit(value, stable):
            return {"enqueued": False, "reason": "worse than the median stable trial"}
        taken = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                                TrialState.WAITING) for t in trials)
        if s.target is not None and taken >= s.target:
            return {"enqueued": False, "reason": "no trial slot left"}
        credited, why = credit_params(space, params, effective)
        if credited is None:
            return {"enqueued": False, "reason": why}
        trial.study.enqueue_trial(credited, user_attrs={TrialAttr.CREDIT_OF: trial.number},
                                  skip_if_exists=True)
        return {"enqueued": True, "reason": why, "params": jsonable(credited)}


def _result_of(summary: Mapping[str, Any], events: list[Event]) -> RunResult:
    """The RunResult a finished run's summary.json describes."""
    effective = dict(summary["effective_config"])
    return RunResult(status=RunStatus(summary["status"]), hparams=effective, config=effective,
                     best_val_loss=as_float(summary["best_val_loss"]),
                     best_epoch=summary.get("best_epoch"), final=summary.get("final", {}),
                     events=events, global_epochs=int(summary.get("global_epochs", 0)),
                     scores=dict(summary.get("test") or {}))
