"""The main job, timed: `autotune search --trials 30` with default settings, and the
search's overhead against `autotune train` of the same configuration.

    python benchmarks/search_main.py                          # 30 trials, default space
    python benchmarks/search_main.py --trials 4 --epochs 2    # a smoke run
    python benchmarks/search_main.py --overhead --epochs 6    # one-trial search vs train
    python benchmarks/search_main.py --trials 4 --epochs 4 --busy 1   # beside a busy process

The search runs as a subprocess of the real command line in a temporary folder (its own
SQLite storage); the figures come from the study afterwards. Targets (issue 4): at most
10 minutes on a 2-core machine with a best validation loss clearly below the first
epoch's; a one-trial search at most 3% slower than `autotune train`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from neighbours import busy_neighbours  # benchmarks/neighbours.py
from optuna.trial import TrialState


def _load(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/studies/autotune.db")


def main_job(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "autotune", "search", "--trials", str(args.trials),
               "--study", "main", "--space", args.space, "--jobs", str(args.jobs)]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 3):
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(f"search failed with exit code {done.returncode}")
    study = _load(folder, "main")
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    first = [t.intermediate_values[min(t.intermediate_values)] for t in finished
             if t.intermediate_values]
    check = study.user_attrs.get("confirmation") or {}
    events = [line for line in done.stdout.splitlines() if "re-check" in line]
    best = min((t.value for t in trials if t.state == TrialState.COMPLETE
                and t.user_attrs.get("stable") and t.value is not None), default=None)
    return {
        "exit_code": done.returncode, "wall_s": round(wall, 1), "trials": len(finished),
        "complete": sum(t.state == TrialState.COMPLETE for t in finished),
        "pruned": sum(t.state == TrialState.PRUNED for t in finished),
        "diverged": sum(bool(t.user_attrs.get("divergences")) for t in finished),
        "salvaged": sum(bool(t.user_attrs.get("divergences")) and bool(
            t.user_attrs.get("stable")) for t in finished),
        "best_val_loss": best, "median_first_epoch_val_loss":
            statistics.median(first) if first else None,
        "best_first_epoch_val_loss": min(first) if first else None,
        "confirmed": check.get("confirmed"), "confirm_val_loss": check.get("value"),
        "recheck_lines": events[-1:] if events else [],
        "trial_seconds_median": statistics.median(
            [t.duration.total_seconds() for t in finished if t.duration]) if finished else None,
        "cores": os.cpu_count(),
    }


def overhead(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Wall time of a one-trial search (everything fixed, no re-check) against
    `autotune train` of the same configuration, in-process, alternating, median of n."""
    import yaml

    from autotune.recovery.runs import start_run
    from autotune.search import SearchSettings, prepare, run_search
    from trainer.config import resolve

    epochs = args.epochs or 6
    fixed = {"learning_rate": 2e-3, "epochs": epochs}
    (folder / "fixed.yaml").write_text(yaml.safe_dump(fixed))
    config = resolve("tiny", fixed)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    search_s, train_s = [], []
    for i in range(args.repeats):
        start = time.perf_counter()
        start_run(config, folder / f"train-{i}", "cpu")
        train_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        plan = prepare(SearchSettings(study=f"over-{i}", storage=f"sqlite:///{folder}/o.db",
                                      trials=1, space=str(folder / "fixed.yaml"),
                                      profile="tiny", artifacts=str(folder / f"a-{i}"),
                                      device="cpu"))
        run_search(plan, confirm_winner=False)
        search_s.append(time.perf_counter() - start)
    s, t = statistics.median(search_s), statistics.median(train_s)
    return {"epochs": epochs, "repeats": args.repeats, "train_s": [round(x, 2) for x in train_s],
            "search_s": [round(x, 2) for x in search_s], "median_train_s": round(t, 2),
            "median_search_s": round(s, 2), "overhead_pct": round(100 * (s / t - 1), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=None, help="override the space's")
    parser.add_argument("--space", default="default")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--overhead", action="store_true",
                        help="measure a one-trial search against train instead")
    parser.add_argument("--repeats", type=int, default=3, help="for --overhead")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--busy", type=int, default=0,
                        help="single-threaded busy processes to run beside it (neighbours)")
    args = parser.parse_args(argv)
    if args.busy < 0:
        parser.error(f"--busy must be 0 or more but got {args.busy}")
    load = os.getloadavg()[0]
    with busy_neighbours(args.busy), tempfile.TemporaryDirectory(prefix="autotune-main-") as tmp:
        figures = overhead(args, Path(tmp)) if args.overhead else main_job(args, Path(tmp))
    figures["busy_neighbours"] = args.busy
    figures["load_avg_before"] = round(load, 2)
    figures["load_avg_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
