"""1 worker against 2 workers on one PostgreSQL study: finished trials per hour, as a ratio.

    python benchmarks/workers.py                 # 8 trials each way, tiny profile, ~3 min
    python benchmarks/workers.py --trials 12 --epochs 3
    python benchmarks/workers.py --storage postgresql://user:pw@host/db

Each run is a fresh study on the same space and the same number of trials, its workers
separate `autotune search --storage URL --study S` processes (as on separate machines),
each pinned to its own core with one torch thread. Trials per hour come from the trials'
own timestamps (first start to last finish), so process start-up and the winner's
re-check are left out; the wall time of the whole command is shown beside them. With
`--epochs 2` a pruned trial (the median pruner starts after 5) stops at its last epoch
anyway, so every trial costs the same compute in both runs. Target on a 2-core machine:
ratio >= 1.7.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from autotune.search import open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def run(args: argparse.Namespace, workers: int, folder: Path) -> dict[str, Any]:
    """One study with `workers` processes; its figures."""
    study = f"bench-workers-{workers}-{uuid.uuid4().hex[:8]}"
    cores = sorted(os.sched_getaffinity(0))
    if workers > len(cores):
        raise SystemExit(f"{workers} workers need {workers} cores; this process has "
                         f"{len(cores)}.")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AUTOTUNE_INJECT", None)
    command = [sys.executable, "-m", "autotune", "search", "--storage", args.storage,
               "--study", study, "--trials", str(args.trials), "--space", "space.yaml",
               "--seed", str(args.seed), "--artifacts", str(folder / study)]
    start = time.monotonic()
    procs = []
    for i in range(workers):
        core = {cores[i]}
        procs.append(subprocess.Popen(command, cwd=folder, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True,
                                      preexec_fn=lambda core=core: os.sched_setaffinity(0, core)))
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=args.timeout)
            if proc.returncode not in (0, 3):
                raise SystemExit(f"a worker exited {proc.returncode}: {err[-2000:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall = time.monotonic() - start
    storage = open_storage(args.storage)
    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        optuna.delete_study(study_name=study, storage=storage)
    finished = [t for t in trials if t.state in FINISHED]
    first = min(t.datetime_start for t in finished if t.datetime_start)
    last = max(t.datetime_complete for t in finished if t.datetime_complete)
    span = (last - first).total_seconds()
    per_trial = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished
                 if t.datetime_start and t.datetime_complete]
    return {"workers": workers, "trials": len(finished),
            "pruned": sum(t.state == TrialState.PRUNED for t in finished),
            "trial span (s)": round(span, 1),
            "mean trial (s)": round(sum(per_trial) / len(per_trial), 2),
            "trials/hour": round(len(finished) / span * 3600, 1),
            "command wall (s)": round(wall, 1),
            "trials/hour incl. start-up": round(len(finished) / wall * 3600, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default=os.environ.get("AUTOTUNE_TEST_POSTGRES_URL",
                                                            DEFAULT_URL))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    results = []
    with tempfile.TemporaryDirectory(prefix="workers-") as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(yaml.safe_dump({
            "learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
            "label_smoothing": {"choices": [0.0, 0.1]},
            "epochs": args.epochs}))  # the tiny profile otherwise: 150 tasks, 10x10 grids
        for workers in (1, 2):
            results.append(run(args, workers, folder))
            print(json.dumps(results[-1]), flush=True)
    one, two = results
    ratio = two["trials/hour"] / one["trials/hour"]
    ratio_wall = two["trials/hour incl. start-up"] / one["trials/hour incl. start-up"]
    print()
    print(f"workers on PostgreSQL, tiny profile, {args.trials} trials x {args.epochs} epochs, "
          f"one core and one torch thread per worker")
    keys = list(one)
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in results:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    print(f"\nratio 2 workers / 1 worker: {ratio:.2f}x trials/hour "
          f"({ratio_wall:.2f}x counting start-up and the winner's re-check); target >= 1.7x")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "ratio": ratio,
                                               "ratio_wall": ratio_wall}, indent=2))
    return 0 if ratio >= 1.7 else 1


if __name__ == "__main__":
    sys.exit(main())
