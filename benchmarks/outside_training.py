"""What a search spends outside training: its wall time less the trainer's epochs.

    python benchmarks/outside_training.py --seeds 1 2 3 4 [--arms on,plain] [--tag CODE]
        [--space studies/pays_default.yaml] [--json OUT]

Each arm of `search_vs_optuna.py` (plain Optuna in memory; `autotune search` with
recovery `on` or `off` in a SQLite study) runs seed after seed in this one process, one
thread, after a one-trial warm-up (imports, the data, the first open of a SQLite study), with
`Trainer.train_epoch` and `Trainer.evaluate` timed. `outside` is the search's wall time
less those: the storage calls, checkpoints, run directories and the trial's record that
the trainer alone does not do. Both arms run the same trials to the same values (the
printed `best` and `trials` show it), so the difference of `outside` is the difference
of the searches' own costs, free of the 5-10% by which training time varies from one run
to the next on a shared machine. Pin the process to a core (`taskset -c 0`) and compare
two codes side by side, each from its own frozen copy, swapping the cores for a second
pass (BENCHMARKS.md, "Thirteenth session").
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import search_vs_optuna as bench  # noqa: E402

from trainer.loop import Trainer  # noqa: E402


def timed(spent: dict[str, float], label: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, adding each call's seconds to `spent[label]`."""
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - start
    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--arms", default="on,plain")
    parser.add_argument("--space", default="studies/pays_default.yaml")
    parser.add_argument("--tag", default="", help="a name for the code measured, in each row")
    parser.add_argument("--json", type=Path, default=None, help="the rows, as a JSON list")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in bench.ARMS]
    if bad or not arms:
        parser.error(f"--arms takes a comma-separated list of {', '.join(bench.ARMS)} "
                     f"but got {args.arms!r}")
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    spent: dict[str, float] = defaultdict(float)
    Trainer.train_epoch = timed(spent, "train", Trainer.train_epoch)  # type: ignore[method-assign]
    Trainer.evaluate = timed(spent, "eval", Trainer.evaluate)  # type: ignore[method-assign]
    rows = []
    with tempfile.TemporaryDirectory(prefix="autotune-outside-") as folder:
        for arm in arms:  # the warm-up: one trial of each arm
            bench.run_arm((arm, args.space, 10_000, 1200, 1, None, None, folder, None))
        for seed in args.seeds:
            for arm in arms:
                spent.clear()
                row = bench.run_arm((arm, args.space, seed, 1200, 6, None, None, folder,
                                     None))
                out = {"tag": args.tag, "arm": arm, "seed": seed, "wall": round(row.wall_s, 3),
                       "train": round(spent["train"], 3), "eval": round(spent["eval"], 3),
                       "outside": round(row.wall_s - spent["train"] - spent["eval"], 3),
                       "best": row.best_stable, "trials": row.trials}
                rows.append(out)
                print(json.dumps(out), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
