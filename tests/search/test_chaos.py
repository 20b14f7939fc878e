"""Chaos: a search worker is SIGKILLed from outside mid-trial, twice, at moments drawn from a
seeded random stream; `autotune resume --study` ends the study with exactly the requested
trials, none lost or counted twice, each killed trial continued from its checkpoint, and
every checkpoint on disk loadable. SQLite storage in a temporary folder."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import FrozenTrial, TrialState

from autotune.recovery import checkpoint_files as checkpoint
from autotune.search import FINISHED
from tests.search.faults import TIMEOUT, Holds, saved_all, spawn

EPOCHS = 4
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "epochs": EPOCHS, "max_tasks": 20}  # 2 optimizer steps an epoch
TOTAL = 4  # fewer than the median pruner's 5 startup trials: none is pruned
STUDY = "chaos"
SEED = 20260511


@dataclass(frozen=True)
class Kill:
    """What a killed trial had on disk the moment its process died."""

    number: int
    run_dir: Path
    metrics: list[dict[str, Any]]
    checkpoint: int  # global epoch of its newest checkpoint


def _trials(folder: Path) -> list[FrozenTrial]:
    path = folder / "studies" / "autotune.db"
    artifacts = folder / "studies" / "artifacts" / STUDY
    if not (artifacts.is_dir() and any(artifacts.iterdir())):
        return []  # opening the storage while the worker creates its tables breaks that
    try:
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{path}").get_trials()
    except (KeyError, sqlalchemy.exc.SQLAlchemyError):
        return []  # the worker is creating the study right now


def _owned(trials: list[FrozenTrial], pid: int) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING
            and (t.user_attrs.get("worker") or {}).get("pid") == pid and "run_dir" in t.user_attrs]


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def kill_mid_trial(folder: Path, proc: subprocess.Popen[str], holds: Holds) -> Kill:
    """SIGKILL `proc` where it is parked (inside an epoch's training, every earlier epoch
    checkpointed); returns what its trial had saved."""
    def parked_trial() -> object:
        mine = _owned(_trials(folder), proc.pid)
        return mine and saved_all(Path(mine[0].user_attrs["run_dir"])) and mine[0]

    victim = holds.wait(proc.pid, [proc], parked_trial)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    run_dir = Path(victim.user_attrs["run_dir"])
    newest = checkpoint.listing(run_dir / "checkpoints")[-1].global_epoch
    return Kill(victim.number, run_dir, _metrics(run_dir), newest)


def check_continued(kill: Kill, trials: list[FrozenTrial]) -> None:
    """One finished trial holds the killed run, continued from its newest checkpoint."""
    assert kill.checkpoint >= 1  # killed after an epoch it had saved
    holders = [t for t in trials if t.state in FINISHED
               and t.user_attrs.get("run_dir") == str(kill.run_dir)]
    assert len(holders) == 1, [t.number for t in holders]
    metrics = _metrics(kill.run_dir)
    kept = [m for m in kill.metrics if m["global_epoch"] <= kill.checkpoint]
    assert metrics[:len(kept)] == kept  # what was saved before the kill is still there
    epochs = [m["global_epoch"] for m in metrics]
    assert epochs == sorted(set(epochs)) and epochs[0] == 1  # carried on, never restarted
    assert epochs[-1] >= EPOCHS
    events = [json.loads(line) for line in (kill.run_dir / "events.jsonl").read_text()
              .splitlines()]
    assert kill.checkpoint in [e["global_epoch"] for e in events if e["kind"] == "resumed"]


def check_checkpoints(artifacts: Path) -> int:
    """Every checkpoint with a completion marker under `artifacts` loads; returns how many."""
    count = 0
    for folder in sorted(artifacts.iterdir()):
        ckpts = folder / "checkpoints"
        for info in checkpoint.listing(ckpts):
            assert checkpoint.load(ckpts, info)["version"] == checkpoint.FORMAT_VERSION
            count += 1
    return count


@pytest.mark.slow
def test_two_kills_at_random_moments_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    holds = Holds(tmp_path / "holds")
    # Each kill's moment: a step drawn in advance, inside epoch 2 or 3 of a trial, after
    # the epoch-1 checkpoint (steps 2 and 3 are epoch 2's, 4 and 5 epoch 3's).
    steps = [rng.randint(2, 2 * (EPOCHS - 1) - 1) for _ in range(2)]
    argv = ["search", "--trials", str(TOTAL), "--study", STUDY, "--space", "space.yaml",
            "--seed", "0"]
    proc = spawn(tmp_path, *argv, env=holds.env(steps[0]))
    kills = []
    try:
        for i in range(2):
            kills.append(kill_mid_trial(tmp_path, proc, holds))
            env = holds.env(steps[1]) if i == 0 else {}
            proc = spawn(tmp_path, "resume", "--study", STUDY, env=env)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:  # a failed check: leave no worker behind
            proc.kill()
            proc.wait()

    trials = _trials(tmp_path)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == TOTAL
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.user_attrs["run_dir"] for t in finished}) == TOTAL  # none counted twice
    failed = [t.number for t in trials if t.state == TrialState.FAIL
              and not t.user_attrs.get("surplus")]
    assert sorted(failed) == sorted(k.number for k in kills)  # only the killed ones
    for kill in kills:
        check_continued(kill, trials)
    assert check_checkpoints(tmp_path / "studies" / "artifacts" / STUDY) >= TOTAL


OPEN_AT = """
import sys, time
from autotune.search import open_storage
from autotune.errors import ConfigError
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
try:
    open_storage(None)
except ConfigError as exc:
    sys.exit(f"{exc}")
"""


@pytest.mark.slow
def test_workers_started_together_on_a_new_storage_all_open_it(tmp_path: Path) -> None:
    # Six processes open one new SQLite file at the same moment: each races to create the
    # tables, and none may fail for it (a cluster starts its workers together).
    at = time.time() + 8.0  # after every process has imported torch
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, str(at)], cwd=tmp_path,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 6, errors
    storage = f"sqlite:///{tmp_path / 'studies' / 'autotune.db'}"
    assert optuna.get_all_study_names(storage) == []
