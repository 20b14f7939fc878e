"""Studies: storage, sampler, pruner, workers, heartbeat and retry, the winner's re-check.

A study is created once with its plan (the requested number of trials, the search space,
profile, epochs, artifacts folder) stored in its user attributes, so that any worker and
`autotune resume --study` know what to do from the storage alone. Every worker, a local
process (`--jobs`) or another machine pointed at the same storage, runs the same loop:

1. fail and re-queue the trials whose process died: a local process that no longer exists
   at once, any other when its heartbeat is older than the grace period (Optuna's
   `fail_stale_trials` with `RetryHeartbeatStaleTrialCallback`), and trials a Ctrl-C
   interrupted;
2. count: stop when the requested number of trials finished (complete or pruned); wait
   while the remaining ones are running elsewhere (one of them may die and need a worker);
   otherwise run one trial (`study.optimize(n_trials=1)`: Optuna pops a re-queued trial
   first, and the objective continues its run directory from the last checkpoint).

The trial numbers decide a race for the last slot (`objective.is_surplus`), so the number
of finished trials is exactly the requested one across workers.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import signal
import socket
import time
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner, MedianPruner
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autotune.objective import (
    TIMELINE,
    EventSink,
    Objective,
    ObjectiveSettings,
    SearchEvent,
    SurplusTrial,
)
from autotune.runs import best_of, start_run
from autotune.sampler import CreditTPESampler
from autotune.space import Choice, Space, load_space, parse_space
from autotune.supervisor import changes_of
from autotune.views import StudyView
from trainer.config import PROFILES, from_dict
from trainer.errors import ConfigError, Interrupted
from trainer.loop import set_threads
from trainer.rundir import jsonable

__all__ = ["DEFAULT_STORAGE", "DEFAULT_STUDY", "DEFAULT_TRIALS", "Heartbeat", "SearchOutcome",
           "SearchSettings", "StudyPlan", "Tally", "TimelinePruner", "Winner", "confirm",
           "load_study", "mask_url", "next_action", "open_storage", "prepare", "resume",
           "run_search", "storage_url", "tally", "timeline_values", "winner_of"]

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///studies/autotune.db"
DEFAULT_STUDY = "arc"
DEFAULT_TRIALS = 30
PLAN_ATTR = "autotune_plan"
CONFIRM_ATTR = "confirmation"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POLL_S = 1.0


# -- settings -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Heartbeat:
    """How often a running trial proves it is alive, and after how long it counts as dead.

    `AUTOTUNE_HEARTBEAT=INTERVAL[,GRACE]` (seconds) overrides the defaults, e.g. on a
    cluster whose machines are preempted often.
    """

    interval: int = 10
    grace: int = 60

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ConfigError(f"heartbeat interval must be >= 1 s but got {self.interval}.")
        if self.grace <= self.interval:
            raise ConfigError(f"heartbeat grace period must exceed the interval "
                              f"({self.interval} s) but got {self.grace}.")

    @classmethod
    def from_env(cls) -> Heartbeat:
        raw = os.environ.get("AUTOTUNE_HEARTBEAT", "").strip()
        if not raw:
            return cls()
        try:
            parts = [int(p) for p in raw.split(",")]
        except ValueError:
            raise ConfigError(f"AUTOTUNE_HEARTBEAT takes INTERVAL[,GRACE] in seconds but got "
                              f"{raw!r}.") from None
        return cls(parts[0], parts[1] if len(parts) > 1 else 3 * parts[0])


@dataclass(frozen=True)
class SearchSettings:
    """The flags of `autotune search`; None means the study's stored value or the default."""

    study: str = DEFAULT_STUDY
    storage: str | None = None
    trials: int | None = None
    space: str | None = None
    profile: str | None = None
    epochs: int | None = None
    timeout: float | None = None
    seed: int | None = None
    jobs: int = 1
    artifacts: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        for name, low in (("trials", 1), ("epochs", 1), ("jobs", 1), ("seed", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                raise ConfigError(f"--{name} must be an integer >= {low} but got {value!r}.")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"--timeout must be a number of seconds > 0 but got "
                              f"{self.timeout!r}.")
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"--profile must be one of {', '.join(PROFILES)} but got "
                              f"{self.profile!r}.")
        if not self.study or not self.study.strip():
            raise ConfigError("--study must be a non-empty name.")
        if self.artifacts is None and (Path(self.study).name != self.study
                                       or self.study in (".", "..")):
            # The default artifacts folder is studies/artifacts/STUDY: never outside it.
            raise ConfigError(f"--study {self.study!r} would put its runs outside "
                              f"studies/artifacts/; give a name without '/' or '..', or "
                              f"an --artifacts folder.")


@dataclass(frozen=True)
class StudyPlan:
    """What a study was asked to do; stored with it (`PLAN_ATTR`) for workers and resume."""

    study: str
    storage: str
    trials: int
    space: dict[str, Any]
    profile: str
    epochs: int | None
    artifacts: str
    seed: int | None = None
    jobs: int = 1
    device: str = "auto"
    version: int = 1

    def space_obj(self) -> Space:
        return parse_space(self.space, f"of study {self.study!r}")

    def objective_settings(self) -> ObjectiveSettings:
        overrides = {"epochs": self.epochs} if self.epochs is not None else {}
        return ObjectiveSettings(self.space_obj(), self.profile, Path(self.artifacts),
                                 overrides, self.device, self.trials)

    def stored(self) -> dict[str, Any]:
        """The plan as a study attribute (the storage URL is not stored: it is where the
        study is, and may hold a password)."""
        out = asdict(self)
        out.pop("storage")
        return json.loads(json.dumps(out))

    @classmethod
    def from_stored(cls, attrs: dict[str, Any], study: str, storage: str) -> StudyPlan:
        data = {k: v for k, v in attrs.items() if k in cls.__dataclass_fields__}
        return cls(**{**data, "study": study, "storage": storage})


# -- storage ------------------------------------------------------------------------------

def storage_url(url: str | None) -> str:
    """The storage URL: the default SQLite file under the current directory when None."""
    return DEFAULT_STORAGE if url is None else url


def mask_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


_SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "duplicate key")


def _with_driver(url: str) -> str:
    """A plain `postgresql://` URL with the driver that is installed: SQLAlchemy 2.1 reads
    it as psycopg (3), while the `postgres` extra installs psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme != "postgresql" or not sep:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"postgresql+psycopg2://{rest}"
    return url


def open_storage(url: str | None, *, create: bool = True,
                 heartbeat: Heartbeat | None = None) -> RDBStorage:
    """An RDB storage with heartbeat and retry; ConfigError (password masked) when the URL
    is malformed, its driver is missing or its server cannot be reached. With
    `create=False` a missing SQLite file is an error and nothing is written."""
    url = storage_url(url)
    heartbeat = heartbeat or Heartbeat.from_env()
    shown = mask_url(url)
    try:
        path = _sqlite_file(url)
    except Exception as exc:
        raise ConfigError(f"--storage {shown!r} is not a database URL "
                          f"(e.g. sqlite:///studies/autotune.db or "
                          f"postgresql://user:password@host/db): {exc}") from None
    if path is not None:
        if not path.exists() and not create:
            raise ConfigError(f"storage {shown!r} does not exist (no file {str(path)!r}); "
                              f"run `autotune search` first.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"storage {shown!r}: cannot create folder "
                              f"{str(path.parent)!r}: {exc.strerror}.") from None
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        # Several local processes share one SQLite file: wait for its lock, don't fail.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback()

        def connect() -> RDBStorage:
            return RDBStorage(_with_driver(url), engine_kwargs=engine_kwargs,
                              heartbeat_interval=heartbeat.interval,
                              grace_period=heartbeat.grace, heartbeat_stale_trial_callback=retry)

        try:
            for attempt in range(4):
                try:
                    return connect()
                except Exception as exc:
                    # Workers started together on a new database race to create its
                    # tables; the losers find them made on the next try.
                    if not any(s in str(exc) for s in _SCHEMA_RACE):
                        raise
                    time.sleep(0.2 * (attempt + 1))
            return connect()
        except ImportError as exc:
            hint = ("pip install 'autotune[postgres]'" if url.startswith("postgres")
                    else "install the SQLAlchemy driver of that database")
            raise ConfigError(f"storage {shown!r} needs a database driver that is not "
                              f"installed ({exc.name or exc}); {hint}.") from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"storage {shown!r} cannot be opened: "
                              f"{first.replace(url, shown)}") from None


def load_study(name: str, url: str | None) -> optuna.Study:
    """An existing study (ConfigError naming the known ones when it does not exist)."""
    storage = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=name, storage=storage,
                                 sampler=optuna.samplers.RandomSampler())
    except KeyError:
        known = optuna.get_all_study_names(storage)
        shown = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"no study {name!r} in storage {mask_url(storage_url(url))!r} "
                          f"(studies there: {shown}).") from None


def stored_plan(study: optuna.Study, url: str | None) -> StudyPlan:
    attrs = study.user_attrs.get(PLAN_ATTR)
    if not isinstance(attrs, dict):
        raise ConfigError(f"study {study.study_name!r} was not created by `autotune search` "
                          f"(it has no stored plan), so it cannot be resumed.")
    return StudyPlan.from_stored(attrs, study.study_name, storage_url(url))


# -- pruning ------------------------------------------------------------------------------

def timeline_values(trial: FrozenTrial) -> dict[int, float]:
    """A trial's finite reported values on its surviving timeline, keyed by logical epoch.

    Reports are at global epochs (they never go back); a rollback makes some of them stale.
    Trials without the `timeline` attribute (not ours) keep their values as reported.
    """
    values = trial.intermediate_values
    pairs = trial.user_attrs.get(TIMELINE)
    if not isinstance(pairs, list):
        return {s: v for s, v in values.items() if math.isfinite(v)}
    out: dict[int, float] = {}
    for global_epoch, epoch in pairs:
        value = values.get(int(global_epoch))
        if value is not None and math.isfinite(value):
            out[int(epoch)] = value
    return out


def _view(trial: FrozenTrial) -> FrozenTrial:
    seen = copy.copy(trial)
    seen.intermediate_values = timeline_values(trial)
    return seen


class _TimelineView(StudyView):
    """A study whose trials show their timeline values (what a wrapped pruner reads)."""

    def shown(self, trials: list[FrozenTrial],
              states: Collection[TrialState] | None) -> list[FrozenTrial]:
        return [_view(t) for t in trials]


class TimelinePruner(BasePruner):
    """Wraps a pruner so it judges trials on their surviving timelines.

    Each trial is seen with the values of epochs a rollback undid removed, NaN and
    infinite values removed, and keyed by logical epoch, so a recovered trial is compared
    with the others at the same amount of training of its surviving model. A trial with no
    finite value is never pruned here (divergence is the supervisor's business).
    """

    def __init__(self, wrapped: BasePruner) -> None:
        if not isinstance(wrapped, BasePruner):
            raise TypeError(f"wrapped must be a BasePruner but got {type(wrapped).__name__}.")
        self._wrapped = wrapped

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        seen = _view(trial)
        if seen.last_step is None:
            return False
        return self._wrapped.prune(_TimelineView(study), seen)  # type: ignore[arg-type]


def default_pruner() -> BasePruner:
    """The median pruner after 5 finished trials and 2 epochs, on timelines."""
    return TimelinePruner(MedianPruner(n_startup_trials=5, n_warmup_steps=2))


def make_sampler(plan: StudyPlan, worker: int, existing: int) -> optuna.samplers.BaseSampler:
    """TPE that also sees what recovery's restarts achieved (`autotune.sampler`); with a
    seed, each worker (and each resume) draws its own reproducible stream."""
    seed = None if plan.seed is None else plan.seed + 7919 * worker + existing
    startup = max(3, min(10, plan.trials // 3))
    return CreditTPESampler(seed=seed, n_startup_trials=startup)


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


def _finished(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state in FINISHED]


def winner_of(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The best stable trial: complete, ended with no unrecovered divergence."""
    stable = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
              and t.user_attrs.get("stable", True) and math.isfinite(t.value)]
    return min(stable, key=lambda t: (t.value, t.number)) if stable else None


def tally(trials: list[FrozenTrial], total: int) -> Tally:
    """Counts of a study's trials (a pure function of them)."""
    finished = _finished(trials)
    best = winner_of(trials)
    diverged = [t for t in finished if t.user_attrs.get("divergences", 0)]
    return Tally(
        done=len(finished), total=total,
        running=sum(t.state == TrialState.RUNNING for t in trials),
        best_value=best.value if best else None, best_trial=best.number if best else None,
        diverged=len(diverged),
        recovered=sum(bool(t.user_attrs.get("stable")) for t in diverged),
        gave_up=sum(t.user_attrs.get("status") == "gave_up" for t in finished),
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        failed=sum(t.state == TrialState.FAIL and not t.user_attrs.get("surplus")
                   for t in trials))


def next_action(target: int, finished: int, running: int) -> str:
    """`run` a trial, `wait` (the rest are running elsewhere and may need taking over), or
    `stop` (the requested number finished)."""
    if finished >= target:
        return "stop"
    if finished + running < target:
        return "run"
    return "wait"


# -- dead trials --------------------------------------------------------------------------

def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process runs no trial while it reaps
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent is a zombie: dead all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _fail_own(study: optuna.Study) -> None:
    """Mark this process's running trial FAILED: Optuna does so for a KeyboardInterrupt,
    not for the CLI's `Interrupted` (SIGINT/SIGTERM), and `resume --study` retries it."""
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") == me:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                pass


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Re-queue `trial` as Optuna's heartbeat callback does (same params, `failed_trial`),
    without the attributes that described its dead process."""
    queued = copy.copy(trial)
    queued.user_attrs = {k: v for k, v in trial.user_attrs.items()
                         if k not in ("worker", "interrupted")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, queued)


def reap(study: optuna.Study) -> list[int]:
    """Fail and re-queue the trials whose process is gone; returns their numbers."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat older than the grace period
    host = socket.gethostname()
    reaped: list[int] = []
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        worker = t.user_attrs.get("worker") or {}
        if (t.state == TrialState.RUNNING and worker.get("host") == host
                and isinstance(worker.get("pid"), int) and _process_gone(worker["pid"])):
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another worker got there first
            frozen = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
            _retry(study, frozen)
            reaped.append(t.number)
        elif (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")
              and t.number not in retried):
            _retry(study, t)
            reaped.append(t.number)
    return reaped


# -- the search ---------------------------------------------------------------------------

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


@dataclass(frozen=True)
class SearchOutcome:
    """How a search ended."""

    study: str
    tally: Tally
    winner: Winner | None
    timed_out: bool = False
    workers: list[int] = field(default_factory=list)


def default_profile(device: str) -> str:
    import torch
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "default" if cuda else "tiny"


def _probe(space: Space, profile: str, overrides: dict[str, Any]) -> None:
    """Resolve the configurations at the space's corners, so that a bad combination is
    exit 2 before the study exists; a data path must exist."""
    for pick in (0, -1):
        params = {p.key: (p.choices[pick] if isinstance(p, Choice)
                          else (p.low, p.high)[pick]) for p in space.params}
        config = space.config(params, profile, overrides)
        if config.data not in ("arcagi", "arcagi2") and not Path(config.data).exists():
            raise ConfigError(f"data {config.data!r} does not exist; give arcagi, arcagi2 or "
                              f"an existing path.")


def prepare(settings: SearchSettings) -> StudyPlan:
    """Validate everything, then create the study or join the existing one of that name.

    Joining checks that a given space, profile and epochs agree with the stored plan; a
    larger `--trials` raises the study's target.
    """
    url = storage_url(settings.storage)
    space = load_space(settings.space)
    if settings.epochs is not None and space.param("epochs") is not None:
        raise ConfigError("--epochs conflicts with the space's epochs range; drop one.")
    overrides = {"epochs": settings.epochs} if settings.epochs is not None else {}
    profile = settings.profile or default_profile(settings.device)
    _probe(space, profile, overrides)
    storage = open_storage(url)  # the first thing written
    if settings.study in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=settings.study, storage=storage)
        plan = stored_plan(study, url)
        given = json.loads(json.dumps(space.to_yaml())) if settings.space is not None else None
        for flag, mine, theirs in (("--space", given, plan.space),
                                   ("--profile", settings.profile, plan.profile),
                                   ("--epochs", settings.epochs, plan.epochs)):
            if mine is not None and mine != theirs:
                raise ConfigError(f"study {settings.study!r} exists with another {flag[2:]} "
                                  f"({theirs!r}); continue it without {flag}, or use another "
                                  f"--study.")
        plan = replace(plan, storage=url, trials=max(plan.trials, settings.trials or 0),
                       jobs=settings.jobs, device=settings.device,
                       seed=settings.seed if settings.seed is not None else plan.seed)
        study.set_user_attr(PLAN_ATTR, plan.stored())
        return plan
    artifacts = Path(settings.artifacts or Path("studies") / "artifacts" / settings.study)
    plan = StudyPlan(study=settings.study, storage=url,
                     trials=settings.trials or DEFAULT_TRIALS, space=space.to_yaml(),
                     profile=profile, epochs=settings.epochs,
                     artifacts=str(artifacts.resolve()), seed=settings.seed,
                     jobs=settings.jobs, device=settings.device)
    study = optuna.create_study(study_name=settings.study, storage=storage,
                                direction="minimize", load_if_exists=True)
    if PLAN_ATTR not in study.user_attrs:
        study.set_user_attr(PLAN_ATTR, plan.stored())
        return plan
    # Another worker created it a moment ago: its plan is the study's.
    return replace(stored_plan(study, url), jobs=settings.jobs, device=settings.device)


def _open(plan: StudyPlan, worker: int, storage: RDBStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(plan.storage)
    existing = storage.get_n_trials(storage.get_study_id_from_name(plan.study))
    return optuna.load_study(study_name=plan.study, storage=storage,
                             sampler=make_sampler(plan, worker, existing),
                             pruner=default_pruner())


def work(plan: StudyPlan, worker: int = 0, on_event: EventSink | None = None,
         deadline: float | None = None, storage: RDBStorage | None = None) -> None:
    """One worker's loop (see the module docstring) until the study is done or the
    deadline (time.time()) passes; trials already running finish."""
    emit = on_event or (lambda event: None)
    study = _open(plan, worker, storage)
    objective = Objective(plan.objective_settings(), emit)
    while deadline is None or time.time() < deadline:
        for number in reap(study):
            emit(SearchEvent("retry", number, {}))
        trials = study.get_trials(deepcopy=False)
        finished = len(_finished(trials))
        running = sum(t.state == TrialState.RUNNING for t in trials)
        action = next_action(plan.trials, finished, running)
        if action == "stop":
            break
        if action == "wait":
            time.sleep(POLL_S)
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
        except Interrupted:
            _fail_own(study)
            raise
        emit(SearchEvent("tally", None, asdict(tally(study.get_trials(deepcopy=False),
                                                     plan.trials))))


def worker_entry() -> None:
    """Entry point of a `--jobs` worker process: `python -c ... PAYLOAD INDEX`.

    Events go to stdout as JSON lines (the parent renders them); the exit code says how
    it ended (2: bad input, with an `error` event first).
    """
    import sys

    payload, worker = json.loads(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
    set_threads(int(payload["threads"]))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", ExperimentalWarning)

    def send(event: SearchEvent) -> None:
        sys.stdout.write(json.dumps(asdict(event)) + "\n")
        sys.stdout.flush()

    try:
        work(StudyPlan(**payload["plan"]), worker, send, payload["deadline"])
    except KeyboardInterrupt:
        sys.exit(130)
    except ConfigError as exc:
        send(SearchEvent("error", None, {"code": 2, "message": str(exc)}))
        sys.exit(2)
    except Exception as exc:
        send(SearchEvent("error", None, {"code": 1, "message": f"worker {worker}: "
                                         f"{type(exc).__name__}: {exc}"}))
        raise


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _run_workers(plan: StudyPlan, emit: EventSink, deadline: float | None) -> list[int]:
    """Run `plan.jobs` worker processes to the end; returns their exit codes."""
    import selectors
    import subprocess
    import sys

    threads = max(1, cores() // plan.jobs)
    payload = json.dumps({"plan": asdict(plan), "deadline": deadline, "threads": threads})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-c", "from autotune.study import worker_entry; worker_entry()",
               payload]
    # Their own session: a Ctrl-C reaches the parent only, which passes it on once.
    procs = [subprocess.Popen([*command, str(i)], stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for i in range(plan.jobs)]
    errors: list[SearchEvent] = []
    selector = selectors.DefaultSelector()
    for proc in procs:
        assert proc.stdout is not None
        selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        open_pipes = len(procs)
        while open_pipes:
            for key, _ in selector.select(timeout=1.0):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                try:
                    event = SearchEvent(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # not ours (a library printed something)
                (errors.append if event.kind == "error" else emit)(event)
        codes = [proc.wait() for proc in procs]
    except (KeyboardInterrupt, Interrupted):
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # each worker marks its trial interrupted
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        selector.close()
    for error in errors:
        if error.data.get("code") == 2:
            raise ConfigError(error.data["message"])
    if errors:
        raise RuntimeError(errors[0].data["message"])
    return codes


def run_search(plan: StudyPlan, on_event: EventSink | None = None,
               timeout: float | None = None, confirm_winner: bool = True) -> SearchOutcome:
    """Run the study to its requested number of trials (or the timeout), then re-check the
    winner from scratch."""
    emit = on_event or (lambda event: None)
    deadline = time.time() + timeout if timeout is not None else None
    storage = open_storage(plan.storage)
    study = _open(plan, 0, storage)
    emit(SearchEvent("tally", None, asdict(tally(study.get_trials(deepcopy=False),
                                                 plan.trials))))
    codes: list[int] = []
    if plan.jobs > 1:
        codes = _run_workers(plan, emit, deadline)
    # In-process: the only worker, or the one that finishes what dead workers left.
    set_threads(cores())
    work(plan, 0, emit, deadline, storage)
    trials = study.get_trials(deepcopy=False)
    result = tally(trials, plan.trials)
    timed_out = result.done < plan.trials
    best = winner_of(trials)
    win = None
    if best is not None:
        win = confirm(study, plan, best, emit) if confirm_winner else winner_info(study, best)
    return SearchOutcome(plan.study, result, win, timed_out, codes)


def resume(name: str, url: str | None, on_event: EventSink | None = None,
           jobs: int | None = None) -> SearchOutcome:
    """Continue an interrupted study to its requested number of trials."""
    study = load_study(name, url)
    plan = stored_plan(study, url)
    if jobs is not None:
        plan = replace(plan, jobs=jobs)
    return run_search(plan, on_event)


# -- the winner ---------------------------------------------------------------------------

def winner_info(study: optuna.Study, trial: FrozenTrial) -> Winner:
    """The Winner record of `trial`, with the stored confirmation when it is this trial's."""
    attrs = trial.user_attrs
    effective = attrs.get("effective_config") or {}
    check = study.user_attrs.get(CONFIRM_ATTR) or {}
    mine = check.get("trial") == trial.number
    return Winner(number=trial.number, value=float(trial.value or math.nan),
                  params=dict(trial.params), effective=dict(effective),
                  changes=changes_of(attrs.get("events", [])),
                  divergences=int(attrs.get("divergences", 0)),
                  recoveries=int(attrs.get("recoveries", 0)), run_dir=attrs.get("run_dir"),
                  confirmed=check.get("confirmed") if mine else None,
                  confirm_value=check.get("value") if mine else None,
                  confirm_run_dir=check.get("run_dir") if mine else None)


def confirm(study: optuna.Study, plan: StudyPlan, trial: FrozenTrial,
            on_event: EventSink | None = None) -> Winner:
    """Re-train the winner's effective configuration from scratch with another seed.

    Confirmed when that run ends stable without a single divergence. The result is stored
    in the study's user attributes (`confirmed`, `confirmation`); a winner already checked
    is not checked again.
    """
    emit = on_event or (lambda event: None)
    done = study.user_attrs.get(CONFIRM_ATTR) or {}
    if done.get("trial") == trial.number:
        return winner_info(study, trial)
    effective = from_dict(trial.user_attrs["effective_config"])
    config = effective.replace(seed=(effective.seed + 1) % (2**31 - 1))
    path = Path(plan.artifacts) / f"confirm-trial-{trial.number:04d}"
    try:
        path.mkdir(parents=True)  # atomic: of workers ending together, one gets this name
    except FileExistsError:
        # Another worker is checking this winner now, or an earlier check was interrupted:
        # never touch its folder; check in this process's own.
        path = path.with_name(f"{path.name}-{socket.gethostname()}-{os.getpid()}")
        if path.exists():
            shutil.rmtree(path)
    emit(SearchEvent("confirm_start", trial.number, {"seed": config.seed,
                                                     "run_dir": str(path)}))
    result = start_run(config, path, plan.device)
    confirmed = result.stable and result.divergences == 0
    record = {"trial": trial.number, "confirmed": confirmed, "value": best_of(result),
              "seed": config.seed, "divergences": result.divergences,
              "status": result.status, "run_dir": str(path)}
    study.set_user_attr(CONFIRM_ATTR, jsonable(record))
    study.set_user_attr("confirmed", confirmed)
    emit(SearchEvent("confirm_end", trial.number, jsonable(record)))
    return winner_info(study, trial)


def safe_sink(callback: Callable[[SearchEvent], None]) -> EventSink:
    """An event sink that ignores failures of the display (a search never dies of them)."""
    def sink(event: SearchEvent) -> None:
        try:
            callback(event)
        except Exception:  # a display bug must not kill a trial
            log.exception("progress display failed")
    return sink
