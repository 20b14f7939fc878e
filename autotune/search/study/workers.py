"""Workers: the loop every search process runs, local `--jobs` processes, dead trials.

A study is created once with its plan (the requested number of trials, the search space,
profile, epochs, artifacts folder) stored in its user attributes, so that any worker and
`autotune resume --study` know what to do from the storage alone. Every worker, a local
process (`--jobs`) or another machine pointed at the same storage, runs the same loop:

1. fail and re-queue the trials whose process died: a local process that no longer exists
   at once, any other when its heartbeat is older than the grace period (Optuna's
   `fail_stale_trials` with `RetryHeartbeatStaleTrialCallback`), and trials a Ctrl-C
   interrupted;
2. count: stop when the requested number of trials finished (complete or pruned), or when
   the epoch budget (`autotune.search.budget`) is spent and no killed trial waits to be
   continued; wait while the remaining ones are running elsewhere (one of them may die and
   need a worker); otherwise run one trial (`study.optimize(n_trials=1)`: Optuna pops a
   re-queued trial first, and the objective continues its run directory from the last
   checkpoint).

The trial numbers decide a race for the last slot (`objective.is_surplus`), so the number
of finished trials is exactly the requested one across workers.

Faults beyond a kill: a storage outage is ridden out by the storage itself
(`autotune.search.study.retry`; past its bound `StorageUnavailable` ends the process, exit 1);
a worker that hung and finds its trial taken over (`autotune.search.study.ownership.TrialTaken`)
leaves it and goes on with the loop; a write that fails for the machine (a full disk, a
quota) marks the trial `interrupted` before it ends FAILED, so that `resume --study`
continues it from its last checkpoint once there is room again.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import signal
import socket
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import ConfigError, Interrupted
from autotune.recovery.threads import told_threads
from autotune.search.objective import Objective, SurplusTrial
from autotune.search.pruner import default_pruner
from autotune.search.sampler import CreditTPESampler
from autotune.search.study import ownership
from autotune.search.study.packing import cores
from autotune.search.study.plan import StudyPlan
from autotune.search.study.retry import StorageUnavailable, unavailable_in
from autotune.search.study.storage import open_storage
from autotune.search.tally import finished_trials, next_action, tally
from autotune.search.vocabulary import (
    EventSink,
    NextAction,
    SearchEvent,
    SearchEventKind,
    TrialAttr,
)
from trainer.loop import set_threads

POLL_S = 1.0
# A write that fails for the machine, not the trial: the trial is continued later.
MACHINE_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def make_sampler(plan: StudyPlan, worker: int, existing: int) -> optuna.samplers.BaseSampler:
    """TPE that also sees what recovery's restarts achieved (`autotune.search.sampler`); with a
    seed, each worker (and each resume) draws its own reproducible stream."""
    seed = None if plan.seed is None else (plan.seed + 7919 * worker + existing) % 2**32
    startup = max(3, min(10, plan.trials // 3))
    return CreditTPESampler(seed=seed, n_startup_trials=startup)


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
        if t.user_attrs.get(TrialAttr.WORKER) == me:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                pass


def _retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Re-queue `trial` as Optuna's heartbeat callback does (same params, `failed_trial`),
    without the attributes that described its dead process."""
    queued = copy.copy(trial)
    queued.user_attrs = {k: v for k, v in trial.user_attrs.items()
                         if k not in (TrialAttr.WORKER, TrialAttr.INTERRUPTED, TrialAttr.FAULT)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback()(study, queued)


def reap(study: optuna.Study) -> list[int]:
    """Fail and re-queue the trials whose process is gone; returns their numbers."""
    return reap_and_read(study)[0]


def reap_and_read(study: optuna.Study) -> tuple[list[int], list[FrozenTrial]]:
    """`reap`, and the study's trials after it (read again only when it re-queued some):
    the worker's loop reads them next anyway, and each read of a SQLite study costs a few
    milliseconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat older than the grace period
    host = socket.gethostname()
    reaped: list[int] = []
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for t in trials:
        worker = t.user_attrs.get(TrialAttr.WORKER) or {}
        if (t.state == TrialState.RUNNING and worker.get("host") == host
                and isinstance(worker.get("pid"), int) and _process_gone(worker["pid"])):
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):
                continue  # another worker got there first
            frozen = next(x for x in study.get_trials(deepcopy=False) if x.number == t.number)
            _retry(study, frozen)
            reaped.append(t.number)
        elif (t.state == TrialState.FAIL and t.user_attrs.get(TrialAttr.INTERRUPTED)
              and t.number not in retried):
            _retry(study, t)
            reaped.append(t.number)
    return reaped, (study.get_trials(deepcopy=False) if reaped else trials)


def open_study(plan: StudyPlan, worker: int, storage: BaseStorage | None = None) -> optuna.Study:
    storage = storage or open_storage(plan.storage)
    existing = storage.get_n_trials(storage.get_study_id_from_name(plan.study))
    return optuna.load_study(study_name=plan.study, storage=storage,
                             sampler=make_sampler(plan, worker, existing),
                             pruner=default_pruner())


class _Guarded:
    """The objective, with a machine's write failure recorded on the trial (`interrupted`
    and `fault`: `reap` re-queues it) before Optuna fails it."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            return self.objective(trial)
        except OSError as exc:
            if exc.errno in MACHINE_WRITE_ERRORS:
                try:
                    trial.set_user_attr(TrialAttr.INTERRUPTED, True)
                    trial.set_user_attr(TrialAttr.FAULT, f"cannot write {exc.filename or ''}: "
                                                 f"{exc.strerror}")
                except Exception:  # noqa: BLE001 - the storage may be on the full disk
                    pass
            raise


def _taken(exc: BaseException, claim: ownership.Claim | None) -> bool:
    """Whether an error out of `optimize` means the trial was taken over meanwhile (a
    write of this process met it finished by another)."""
    chain = [exc, exc.__cause__, exc.__context__]
    finished = any(isinstance(e, UpdateFinishedTrialError)
                   or (isinstance(e, ValueError) and str(e).startswith("Cannot tell a "))
                   for e in chain if e is not None)
    if not finished or claim is None:
        return False
    try:
        return not ownership.still_mine(claim)
    except Exception:  # noqa: BLE001
        return False


def _optimize_one(study: optuna.Study, objective: _Guarded, emit: EventSink) -> None:
    """One `study.optimize(n_trials=1)`, the faults this module handles handled."""
    try:
        study.optimize(objective, n_trials=1, catch=(SurplusTrial,), gc_after_trial=False)
    except Interrupted:
        _fail_own(study)
        raise
    except ownership.TrialTaken as exc:
        emit(SearchEvent(SearchEventKind.TAKEN, exc.number, {"message": str(exc)}))
    except Exception as exc:
        unavailable = unavailable_in(exc)
        if unavailable is not None:  # Optuna's clean-up met it and raised its own error
            raise unavailable from None
        claim = ownership.current()
        if not _taken(exc, claim):
            raise
        assert claim is not None
        emit(SearchEvent(SearchEventKind.TAKEN, claim.number, {
            "message": f"trial {claim.number} was taken over by another worker"}))
    finally:
        ownership.release()


def work(plan: StudyPlan, worker: int = 0, on_event: EventSink | None = None,
         deadline: float | None = None, storage: BaseStorage | None = None) -> None:
    """One worker's loop (see the module docstring) until the study is done or the
    deadline (time.time()) passes; trials already running finish."""
    emit = on_event or (lambda event: None)
    study = open_study(plan, worker, storage)
    settings = plan.objective_settings()
    budget = settings.budget
    objective = _Guarded(Objective(settings, emit))
    while deadline is None or time.time() < deadline:
        reaped, trials = reap_and_read(study)
        for number in reaped:
            emit(SearchEvent(SearchEventKind.RETRY, number, {}))
        finished = len(finished_trials(trials))
        running = sum(t.state == TrialState.RUNNING for t in trials)
        continuations = sum(t.state == TrialState.WAITING and "failed_trial" in t.system_attrs
                            for t in trials)
        action = next_action(plan.trials, finished, running,
                             budget_spent=budget.spent(trials), continuations=continuations)
        if action is NextAction.STOP:
            break
        if action is NextAction.WAIT:
            time.sleep(POLL_S)
            continue
        _optimize_one(study, objective, emit)
        counts = tally(study.get_trials(deepcopy=False), plan.trials)
        emit(SearchEvent(SearchEventKind.TALLY, None, asdict(counts)))


def worker_entry() -> None:
    """Entry point of a `--jobs` worker process: `python -c ... INDEX`, the payload (the
    plan, whose storage URL may hold a password) on its standard input, never in its
    command line, which every user of the machine can read.

    Events go to stdout as JSON lines (the parent renders them); the exit code says how
    it ended (2: bad input, with an `error` event first).
    """
    import sys

    payload, worker = json.loads(sys.stdin.readline()), int(sys.argv[1])
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
        send(SearchEvent(SearchEventKind.ERROR, None, {"code": 2, "message": str(exc)}))
        sys.exit(2)
    except StorageUnavailable as exc:
        send(SearchEvent(SearchEventKind.ERROR, None,
                         {"code": 1, "storage": True, "message": str(exc)}))
        sys.exit(1)
    except Exception as exc:
        send(SearchEvent(SearchEventKind.ERROR, None, {"code": 1, "message": f"worker {worker}: "
                                         f"{type(exc).__name__}: {exc}"}))
        raise


def threads_per_worker(jobs: int) -> int:
    """Torch threads for each of `jobs` trials at once: the cores this process may use,
    shared out, or `OMP_NUM_THREADS` where the user set it (never more than one core's
    share: threads beyond the cores oversubscribe them)."""
    share = max(1, cores() // max(1, jobs))
    told = told_threads()
    return share if told is None else min(share, told)


def run_workers(plan: StudyPlan, emit: EventSink, deadline: float | None) -> list[int]:
    """Run `plan.jobs` worker processes to the end; returns their exit codes."""
    import selectors
    import subprocess
    import sys

    threads = threads_per_worker(plan.jobs)
    payload = json.dumps({"plan": asdict(plan), "deadline": deadline, "threads": threads})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-c",
               "from autotune.search.study.workers import worker_entry; worker_entry()"]
    # Their own session: a Ctrl-C reaches the parent only, which passes it on once.
    procs = [subprocess.Popen([*command, str(i)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for i in range(plan.jobs)]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(payload + "\n")
        proc.stdin.close()
    errors: list[SearchEvent] = []
    selector = selectors.DefaultSelector()
    for proc in procs:
        assert proc.stdout is not None
        selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        open_pipes = len(procs)
        while open_pipes:
            for key, _ in selector.select(timeout=1.0):
                # Registered above: the pipes' text streams (typed as any file-like).
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    selector.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                try:
                    event = SearchEvent(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # not ours (a library printed something)
                (errors.append if event.kind is SearchEventKind.ERROR else emit)(event)
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
        if error.data.get("storage"):
            raise StorageUnavailable(error.data["message"])
    if errors:
        raise RuntimeError(errors[0].data["message"])
    return codes
