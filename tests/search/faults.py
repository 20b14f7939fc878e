"""What the fault tests share: worker processes, reading a study, the continued-run checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.recovery import checkpoint_files as checkpoint
from autotune.search import FINISHED, open_storage
from trainer.inject import ENV, HOLD_ENV

STUDY = "faults"
# A bound on waits for events that always come on a working system: only a hung or broken
# worker reaches it, however slow or loaded the machine is.
TIMEOUT = 600.0


def spawn(folder: Path, *argv: str, core: int = 0,
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`autotune ARGV` in `folder` on one core with one torch thread; faults only those that
    `env` names (never the test process's own AUTOTUNE_INJECT)."""
    inherited = {k: v for k, v in os.environ.items() if k not in (ENV, HOLD_ENV)}
    full = {**inherited, "OMP_NUM_THREADS": "1", **(env or {})}
    cores = sorted(os.sched_getaffinity(0))
    pinned = {cores[core % len(cores)]}
    return subprocess.Popen([sys.executable, "-m", "autotune", *argv], cwd=folder, env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, pinned))


def trials(storage: str, study: str = STUDY) -> list[FrozenTrial]:
    """The study's trials ([] while it does not exist yet)."""
    try:
        return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()
    except KeyError:
        return []


def wait_for(what: str, check: Callable[[], Any], timeout: float,
             procs: list[subprocess.Popen[str]] = (), poll: float = 0.05) -> Any:
    """Poll `check` until it returns something true; fail after `timeout` seconds or when
    one of `procs` ended."""
    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            assert proc.poll() is None, f"a worker ended first: {proc.stderr.read()[-2000:]}"
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


class Holds:
    """Worker processes parked at a known optimizer step (`hold@STEP`, trainer/inject.py):
    a test waits until a worker is there and lets it go, instead of racing it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def env(self, step: int) -> dict[str, str]:
        """The environment that parks every run of a worker at global step `step`."""
        return {ENV: f"hold@{step}", HOLD_ENV: str(self.folder)}

    def held(self, pid: int) -> Path | None:
        marks = sorted(self.folder.glob(f"held-{pid}-*")) if self.folder.is_dir() else []
        return marks[0] if marks else None

    def wait(self, pid: int, procs: list[subprocess.Popen[str]],
             ready: Callable[[], Any] = lambda: True) -> Any:
        """Wait until worker `pid` is parked and `ready()` is true (the process's
        other threads, such as a checkpoint writer, may still be finishing)."""
        return wait_for(f"worker {pid} parked", lambda: self.held(pid) and ready(),
                        TIMEOUT, procs, poll=0.02)

    def release(self, pid: int, for_good: bool = False) -> None:
        """Let worker `pid` go on; `for_good`: past every later hold too."""
        if for_good:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"free-{pid}").touch()
        mark = self.held(pid)
        if mark is not None:
            mark.unlink(missing_ok=True)


def saved_all(run_dir: Path) -> bool:
    """Every epoch written to metrics.jsonl also has its checkpoint on disk."""
    done = len(metrics(run_dir))
    return done >= 1 and newest_checkpoint(run_dir) == done


def owned(all_trials: list[FrozenTrial], pid: int) -> list[FrozenTrial]:
    return [t for t in all_trials if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs
            and (t.user_attrs.get("worker") or {}).get("pid") == pid]


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def newest_checkpoint(run_dir: Path) -> int | None:
    infos = checkpoint.listing(run_dir / "checkpoints")
    return infos[-1].global_epoch if infos else None


@dataclass(frozen=True)
class Snapshot:
    """What an interrupted trial had on disk when its fault struck."""

    number: int
    run_dir: Path
    metrics: list[dict[str, Any]]
    checkpoint: int


def snapshot(trial: FrozenTrial) -> Snapshot:
    run_dir = Path(trial.user_attrs["run_dir"])
    newest = newest_checkpoint(run_dir)
    assert newest is not None
    return Snapshot(trial.number, run_dir, metrics(run_dir), newest)


def check_study(all_trials: list[FrozenTrial], total: int) -> list[FrozenTrial]:
    """Exactly `total` finished trials, none left running or queued, none counted twice
    (two finished trials never share a run directory); returns the finished ones."""
    finished = [t for t in all_trials if t.state in FINISHED]
    assert len(finished) == total, [(t.number, t.state.name) for t in all_trials]
    assert not [t for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["run_dir"] for t in finished}) == total
    return finished


def check_continued(snap: Snapshot, all_trials: list[FrozenTrial], epochs: int) -> None:
    """One finished trial holds the interrupted run, continued from its newest checkpoint:
    what was saved is unchanged, `global_epoch` carries on with no epoch written twice,
    a `resumed` event at that checkpoint, no `interrupted` event written after it."""
    assert snap.checkpoint >= 1
    holders = [t for t in all_trials if t.state in FINISHED
               and t.user_attrs.get("run_dir") == str(snap.run_dir)]
    assert len(holders) == 1, [t.number for t in holders]
    assert holders[0].user_attrs.get("retry_of") is not None
    now = metrics(snap.run_dir)
    kept = [m for m in snap.metrics if m["global_epoch"] <= snap.checkpoint]
    assert now[:len(kept)] == kept
    global_epochs = [m["global_epoch"] for m in now]
    assert global_epochs == sorted(set(global_epochs)) and global_epochs[0] == 1, global_epochs
    assert global_epochs[-1] >= epochs
    events = [json.loads(line) for line in
              (snap.run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    resumed = [e["global_epoch"] for e in events if e["kind"] == "resumed"]
    assert snap.checkpoint in resumed, events
    assert "interrupted" not in [e["kind"] for e in events]


def check_checkpoints(artifacts: Path) -> int:
    """Every checkpoint with a completion marker under `artifacts` loads; returns how many."""
    count = 0
    for folder in sorted(p for p in artifacts.iterdir() if p.is_dir()):
        ckpts = folder / "checkpoints"
        for info in checkpoint.listing(ckpts):
            assert checkpoint.load(ckpts, info)["version"] == checkpoint.FORMAT_VERSION
            count += 1
    return count


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str]]:
    """Wait for every process; (exit code, stderr) of each. Kills what is left on a failure."""
    try:
        out = []
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            out.append((proc.returncode, err))
        return out
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
