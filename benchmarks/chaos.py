"""Chaos: SIGKILL `autotune search` workers at random moments, many times, across one study,
restart its database and hang workers, and check that nothing saved was lost and nothing
was counted twice.

    python benchmarks/chaos.py                       # 20 kills, 2 workers, SQLite, ~5 min
    python benchmarks/chaos.py --kills 40 --trials 200
    python benchmarks/chaos.py --storage postgresql://postgres@127.0.0.1:5432/test \
        --restarts 3 --hangs 2                       # the mixed run (root: pg_ctlcluster)

`--workers` processes (each on its own core, one torch thread) run one study of
`--trials` trials. A fault schedule (`--kills` kills, `--restarts` database restarts,
`--hangs` hangs, shuffled with `--seed`) is played with random gaps: a kill SIGKILLs a
random live worker and starts a new one in its place (a worker that joins the study, as a
restarted machine would); a restart runs `pg_ctlcluster VERSION CLUSTER restart` under
the running workers (PostgreSQL only); a hang SIGSTOPs a worker that holds a trial past a
checkpoint until another worker has failed its trial as stale (`--heartbeat`, the grace
period), then SIGCONTs it. Then the workers finish the study. The checks, as in
tests/search/test_chaos.py and tests/search/test_fault_*.py:

- exactly `--trials` finished trials; none left running or queued (lost = requested -
  finished), no run directory held by two finished trials (duplicated);
- every trial a kill or a hang interrupted is FAILED and continued by exactly one finished
  trial in its run directory, from its newest checkpoint at the fault (the metrics saved
  up to that checkpoint are unchanged, `global_epoch` carries on with no epoch written
  twice, a `resumed` event at that epoch): a woken worker wrote nothing over it;
- no worker ended during a database restart (each exits 0 at the end);
- every checkpoint on disk with a completion marker loads (checksum, safe loader).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autotune.errors import ConfigError
from autotune.recovery import checkpoint_files as checkpoint
from autotune.recovery.rundir import RunDir
from autotune.search import open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Kill:
    """One SIGKILL or hang and what the trial it interrupted (if any) had on disk then."""

    at_s: float
    pid: int
    trial: int | None
    run_dir: Path | None
    metrics: list[dict[str, Any]]
    checkpoint: int | None  # global epoch of the trial's newest checkpoint
    ended: bool = False     # its run had ended (summary written), Optuna not yet told
    kind: str = "kill"      # kill or hang
    taken: bool = True      # a hang: another worker failed its trial as stale meanwhile


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics as the loader reads them (a line torn by the kill is ignored)."""
    return RunDir(run_dir).metrics()


class Chaos:
    """The study, its workers and the killer."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.study = f"chaos-{uuid.uuid4().hex[:8]}"
        self.storage = args.storage or f"sqlite:///{folder / 'chaos.db'}"
        self.artifacts = folder / "artifacts"
        self.rng = random.Random(args.seed)
        self.cores = sorted(os.sched_getaffinity(0))
        self.started = 0
        self._opened: BaseStorage | None = None
        self.start = time.monotonic()
        self.restarts: list[float] = []
        self.unexpected: list[str] = []  # workers that ended on their own mid-run
        (folder / "space.yaml").write_text(yaml.safe_dump({
            "learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
            "label_smoothing": {"choices": [0.0, 0.1]},
            "epochs": args.epochs, "max_tasks": args.max_tasks}))

    def spawn(self) -> subprocess.Popen[str]:
        """A worker of the study, on the next core, with one torch thread."""
        core = {self.cores[self.started % len(self.cores)]}
        self.started += 1
        env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOTUNE_HEARTBEAT": self.args.heartbeat}
        env.pop("AUTOTUNE_INJECT", None)
        return subprocess.Popen(
            [sys.executable, "-m", "autotune", "search", "--storage", self.storage, "--study",
             self.study, "--trials", str(self.args.trials), "--space", "space.yaml",
             "--artifacts", str(self.artifacts), "--seed", str(self.args.seed)],
            cwd=self.folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, preexec_fn=lambda: os.sched_setaffinity(0, core))

    def trials(self) -> list[FrozenTrial]:
        if not (self.artifacts.is_dir() and any(self.artifacts.iterdir())):
            return []  # the first worker may be creating the tables: don't race it
        for attempt in range(20):
            try:
                self._opened = self._opened or open_storage(self.storage)
                return optuna.load_study(study_name=self.study,
                                         storage=self._opened).get_trials()
            except (KeyError, ConfigError, sqlalchemy.exc.SQLAlchemyError) as exc:
                if attempt == 19:
                    raise
                print(f"(reading the study: {type(exc).__name__}: {exc}; again)",
                      file=sys.stderr)
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def done(self) -> bool:
        return sum(t.state in FINISHED for t in self.trials()) >= self.args.trials

    def kill(self, proc: subprocess.Popen[str]) -> Kill:
        at = time.monotonic() - self.start
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        held = [t for t in self.trials() if t.state == TrialState.RUNNING
                and (t.user_attrs.get("worker") or {}).get("pid") == proc.pid]
        if not held or "run_dir" not in held[0].user_attrs:
            return Kill(at, proc.pid, held[0].number if held else None, None, [], None)
        run_dir = Path(held[0].user_attrs["run_dir"])
        infos = checkpoint.listing(run_dir / "checkpoints")
        return Kill(at, proc.pid, held[0].number, run_dir, _metrics(run_dir),
                    infos[-1].global_epoch if infos else None,
                    (run_dir / "summary.json").exists())

    def _held(self, proc: subprocess.Popen[str]) -> FrozenTrial | None:
        """The trial `proc` runs, once it is past a checkpoint with 2+ epochs to go."""
        for t in self.trials():
            if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs and (
                    t.user_attrs.get("worker") or {}).get("pid") == proc.pid:
                run_dir = Path(t.user_attrs["run_dir"])
                infos = checkpoint.listing(run_dir / "checkpoints")
                done = len(_metrics(run_dir))
                if infos and infos[-1].global_epoch >= 1 and done <= self.args.epochs - 2:
                    return t
        return None

    def hang(self, proc: subprocess.Popen[str]) -> Kill | None:
        """SIGSTOP `proc` mid-trial past a checkpoint until its trial was failed as stale by
        another worker, then SIGCONT it; None when it held no such trial within 60 s."""
        deadline = time.monotonic() + 60
        held = None
        while held is None:
            if proc.poll() is not None or time.monotonic() > deadline or self.done():
                return None
            held = self._held(proc)
            time.sleep(0.05)
        time.sleep(self.rng.uniform(0.05, 0.2))  # into an epoch's training
        at = time.monotonic() - self.start
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            run_dir = Path(held.user_attrs["run_dir"])
            infos = checkpoint.listing(run_dir / "checkpoints")
            kept = _metrics(run_dir)
            until = time.monotonic() + self.args.finish_timeout
            taken = False
            while not taken and time.monotonic() < until:
                time.sleep(0.5)
                taken = next(t.state for t in self.trials()
                             if t.number == held.number) != TrialState.RUNNING
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        return Kill(at, proc.pid, held.number, run_dir, kept, infos[-1].global_epoch,
                    (run_dir / "summary.json").exists(), kind="hang", taken=taken)

    def restart(self) -> None:
        """Restart the PostgreSQL server under the running workers."""
        at = time.monotonic() - self.start
        subprocess.run(["pg_ctlcluster", *self.args.pg_cluster.split("/"), "restart"],
                       check=True, capture_output=True)
        self.restarts.append(at)

    def schedule(self) -> list[str]:
        faults = (["kill"] * self.args.kills + ["restart"] * self.args.restarts
                  + ["hang"] * self.args.hangs)
        self.rng.shuffle(faults)
        return faults

    def _replace_ended(self, live: list[subprocess.Popen[str]]) -> None:
        for i, proc in enumerate(live):
            if proc.poll() is not None and not self.done():
                _, err = proc.communicate()
                self.unexpected.append(f"pid {proc.pid} exited {proc.returncode}: "
                                       f"{err.strip().splitlines()[-1:] or ''}")
                print(f"worker {proc.pid} ended on its own ({proc.returncode}): "
                      f"{err[-800:]}", file=sys.stderr)
                live[i] = self.spawn()

    def run(self) -> tuple[list[Kill], list[int], float]:
        """Run the study through the faults to its end; (kills and hangs, exit codes, wall
        seconds)."""
        live = [self.spawn() for _ in range(self.args.workers)]
        kills: list[Kill] = []
        codes: list[int] = []
        try:
            for n, fault in enumerate(self.schedule(), 1):
                time.sleep(self.rng.uniform(self.args.min_gap, self.args.max_gap))
                self._replace_ended(live)
                if self.done():
                    break
                if fault == "restart":
                    self.restart()
                    print(f"fault {n:3d} at {self.restarts[-1]:6.1f} s: database restart",
                          flush=True)
                    continue
                victim = live[self.rng.randrange(len(live))]
                if fault == "hang":
                    k = self.hang(victim)
                    if k is None:
                        print(f"fault {n:3d}: no trial to hang", flush=True)
                        continue
                else:
                    live.remove(victim)
                    k = self.kill(victim)
                    live.append(self.spawn())
                kills.append(k)
                print(f"fault {n:3d} at {k.at_s:6.1f} s: {k.kind} pid {k.pid}, trial "
                      f"{k.trial}, checkpoint {k.checkpoint}", flush=True)
            for proc in live:
                _, err = proc.communicate(timeout=self.args.finish_timeout)
                codes.append(proc.returncode)
                if proc.returncode != 0:
                    print(f"worker {proc.pid} exited {proc.returncode}: {err[-1500:]}",
                          file=sys.stderr)
        finally:
            for proc in live:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                    proc.wait()
        return kills, codes, time.monotonic() - self.start

    def cleanup(self) -> None:
        if self.args.storage:
            try:
                optuna.delete_study(study_name=self.study, storage=open_storage(self.storage))
            except KeyError:
                pass


def continued(kill: Kill, trials: list[FrozenTrial]) -> bool:
    """The killed trial's run was carried on from its newest checkpoint by one finished trial."""
    assert kill.run_dir is not None and kill.checkpoint is not None
    holders = [t for t in trials if t.state in FINISHED
               and t.user_attrs.get("run_dir") == str(kill.run_dir)]
    metrics = _metrics(kill.run_dir)
    kept = [m for m in kill.metrics if m["global_epoch"] <= kill.checkpoint]
    epochs = [m["global_epoch"] for m in metrics]
    events = [json.loads(line) for line in
              (kill.run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    resumed = {e["global_epoch"] for e in events if e.get("kind") == "resumed"}
    return (len(holders) == 1 and metrics[:len(kept)] == kept and bool(epochs)
            and epochs == sorted(set(epochs)) and epochs[0] == 1
            and (kill.ended or kill.checkpoint in resumed))


def verify_checkpoints(artifacts: Path) -> tuple[int, int]:
    """(checkpoints that load, checkpoints that do not) under `artifacts`."""
    good = bad = 0
    for folder in sorted(p for p in artifacts.iterdir() if p.is_dir()):
        ckpts = folder / "checkpoints"
        for info in checkpoint.listing(ckpts):
            try:
                checkpoint.load(ckpts, info)
                good += 1
            except (checkpoint.CheckpointError, OSError) as exc:
                print(f"checkpoint does not load: {exc}", file=sys.stderr)
                bad += 1
    return good, bad


def report(chaos: Chaos, kills: list[Kill], codes: list[int], wall: float) -> dict[str, Any]:
    trials = chaos.trials()
    finished = [t for t in trials if t.state in FINISHED]
    holders: dict[str, int] = {}
    for t in finished:
        holders[t.user_attrs.get("run_dir", "")] = holders.get(t.user_attrs.get("run_dir", ""),
                                                               0) + 1
    hangs = [k for k in kills if k.kind == "hang"]
    kills = [k for k in kills if k.kind == "kill"]
    hit = [k for k in kills if k.trial is not None]
    saved = [k for k in hit if k.run_dir is not None and k.checkpoint is not None]
    failed = {t.number for t in trials if t.state == TrialState.FAIL
              and not t.user_attrs.get("surplus")}
    faulted = {k.trial for k in hit} | {k.trial for k in hangs}
    good, bad = verify_checkpoints(chaos.artifacts)
    return {
        "kills": len(kills),
        "kills mid-trial": len(hit),
        "kills before a trial / between trials": len(kills) - len(hit),
        "database restarts": len(chaos.restarts),
        "hangs (SIGSTOP past the grace period, then SIGCONT)": len(hangs),
        "trials requested": chaos.args.trials,
        "trials finished": len(finished),
        "lost": max(chaos.args.trials - len(finished), 0),
        "duplicated": sum(n - 1 for n in holders.values()),
        "left running or queued": sum(t.state in (TrialState.RUNNING, TrialState.WAITING)
                                      for t in trials),
        "killed or hung trials FAILED (as they must be)": f"{len(failed & faulted)}"
                                                          f"/{len(faulted)}",
        "other FAILED trials": len(failed - faulted),
        "killed trials continued from checkpoint": f"{sum(continued(k, trials) for k in saved)}"
                                                   f"/{len(saved)}",
        "  of them from a checkpoint after epoch >= 1": sum(k.checkpoint >= 1 for k in saved
                                                            if k.checkpoint is not None),
        "killed before its first checkpoint (restarted)": len(hit) - len(saved),
        "hung trials taken over by another worker": f"{sum(k.taken for k in hangs)}"
                                                    f"/{len(hangs)}",
        "hung trials continued from checkpoint, nothing written by the woken worker":
            f"{sum(continued(k, trials) for k in hangs)}/{len(hangs)}",
        "workers that ended on their own (a restart, a hang)": len(chaos.unexpected),
        "checkpoints verified": good,
        "checkpoints that fail to load": bad,
        "worker exit codes at the end": ",".join(map(str, codes)),
        "wall time (s)": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-tasks", type=int, default=40)
    parser.add_argument("--min-gap", type=float, default=3.0, help="seconds between kills")
    parser.add_argument("--max-gap", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=0,
                        help="database restarts (PostgreSQL --storage only)")
    parser.add_argument("--hangs", type=int, default=0,
                        help="workers SIGSTOPped past the heartbeat grace, then SIGCONTed")
    parser.add_argument("--heartbeat", default="2,8",
                        help="AUTOTUNE_HEARTBEAT of the workers: INTERVAL,GRACE seconds")
    parser.add_argument("--pg-cluster", default=None,
                        help="VERSION/CLUSTER for pg_ctlcluster (default: the first of "
                             "pg_lsclusters)")
    parser.add_argument("--storage", help="default: SQLite in a temporary folder")
    parser.add_argument("--finish-timeout", type=float, default=600.0)
    parser.add_argument("--keep", help="keep the study's folder here")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    if args.restarts and not (args.storage or "").startswith("postgresql"):
        parser.error("--restarts needs a PostgreSQL --storage")
    if args.restarts and args.pg_cluster is None:
        first = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True,
                               check=True).stdout.split()
        args.pg_cluster = "/".join(first[:2])
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        chaos = Chaos(args, folder)
        try:
            kills, codes, wall = chaos.run()
            result = report(chaos, kills, codes, wall)
        finally:
            chaos.cleanup()
    print()
    print(f"chaos: {args.workers} workers, {args.trials} trials x {args.epochs} epochs, "
          f"storage {'PostgreSQL' if args.storage else 'SQLite'}, seed {args.seed}, "
          f"heartbeat {args.heartbeat}")
    print("| check | result |")
    print("|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    def whole(key: str) -> bool:
        done, of = result[key].split("/")
        return done == of

    ok = (result["lost"] == 0 and result["duplicated"] == 0
          and result["checkpoints that fail to load"] == 0
          and result["left running or queued"] == 0
          and result["workers that ended on their own (a restart, a hang)"] == 0
          and whole("killed trials continued from checkpoint")
          and whole("hung trials continued from checkpoint, nothing written by the woken "
                    "worker"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
