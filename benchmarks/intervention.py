"""Does an intervention help? Every configuration trained twice: left alone, and recovered.

Configurations are sampled at random (seeded) from the shipped spaces. Each is trained
with the same seed twice: once with `--recovery watch` (the counterfactual: nothing
changes, the detectors' alarms are recorded) and once with recovery on. An intervention
*helped* when the recovered run ends with a lower final validation loss than the run left
alone, or the one left alone ended unstable (its final validation loss non-finite, more
than `max_loss_increase` above its best, or at the colour-frequency level: collapsed) and
the recovered one stable.

Reported per detector reason (the reason of a recovered run's first divergence): how often
it fired, precision (fired and helped / fired) and how many of those runs would have ended
unstable; overall, recall (runs that ended unstable when left alone and were acted on /
all such). Alarms of the watch runs are counted by reason too (the detectors fire on the
same run when nothing is changed).

    python benchmarks/intervention.py --configs 60 --json intervention.json
    python benchmarks/intervention.py --configs 4 --epochs 2       # a smoke run

Two runs at a time (one core each); every run is bit-for-bit repeatable (one thread, fixed
seed), so the table does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

from autotune.detect import DetectorConfig, check_collapse
from autotune.events import EventKind, surviving
from autotune.recovery.rundir import RunDir
from autotune.recovery.runs import RunConfig, start_run
from autotune.recovery.settings import RecoveryMode, SupervisorConfig
from autotune.search.space import load_space

SPACES = ("default", "aggressive_lr")
REASONS = ("nonfinite_loss", "nonfinite_grad", "loss_increase", "loss_spike",
           "grad_explosion", "overfitting", "collapsed")


@dataclass
class Pair:
    """One configuration, left alone and recovered."""

    index: int
    space: str
    params: dict[str, Any]
    watch_final: float
    watch_best: float
    watch_unstable: bool
    watch_alarms: list[str]
    on_final: float
    on_best: float
    on_stable: bool
    on_reasons: list[str]
    on_epochs: int
    """Epochs of compute the recovered run spent (the one left alone spent the plan)."""
    helped: bool | None
    """None: nothing was done."""
    seconds: float


def sample_configs(n: int, seed: int, max_tasks: int) -> list[tuple[str, dict[str, Any]]]:
    """n configurations, alternating the shipped spaces, drawn at random (seeded)."""
    out = []
    studies = {name: optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed + i))
               for i, name in enumerate(SPACES)}
    for i in range(n):
        name = SPACES[i % len(SPACES)]
        space = load_space(name)
        out.append((name, space.suggest(studies[name].ask())))
    return out


def _final(records: list[dict[str, Any]]) -> tuple[float, float]:
    vals = [float(r["val_loss"]) for r in records]
    finite = [v for v in vals if math.isfinite(v)]
    return (vals[-1] if vals else math.inf), min(finite, default=math.inf)


def ended_unstable(records: list[dict[str, Any]], max_loss_increase: float) -> bool:
    """A run left alone ended unstable: non-finite, far above its best, or collapsed."""
    final, best = _final(records)
    if not math.isfinite(final) or final > best + max_loss_increase:
        return True
    last = records[-1]
    watch = DetectorConfig(max_loss_increase=1e9, marginal_loss=last.get("marginal_loss"),
                           train_marginal_loss=last.get("train_marginal_loss"))
    return check_collapse(records, watch).diverged


def run_pair(job: tuple[int, str, dict[str, Any], int | None, int, str]) -> Pair:
    """Train one configuration twice (watch, on) in a folder of its own."""
    index, space_name, params, epochs, max_tasks, folder = job
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    space = load_space(space_name)
    overrides: dict[str, Any] = {"max_tasks": max_tasks, "seed": index}
    if epochs:
        overrides["epochs"] = epochs
    config = space.config(params, "tiny", overrides)
    start = time.perf_counter()
    runs = {}
    for mode in (RecoveryMode.WATCH, RecoveryMode.ON):
        path = Path(folder) / f"{index:03d}-{mode.value}"
        start_run(RunConfig(config, SupervisorConfig(recovery=mode)), path, "cpu")
        runs[mode] = RunDir(path)
    watch, on = runs[RecoveryMode.WATCH], runs[RecoveryMode.ON]
    mli = SupervisorConfig().max_loss_increase
    w_records = watch.metrics()
    o_records = surviving(on.metrics())
    w_final, w_best = _final(w_records)
    o_final, o_best = _final(o_records)
    w_unstable = ended_unstable(w_records, mli)
    summary = on.summary() or {}
    on_stable = bool(summary.get("stable"))
    reasons = [e.reason for e in on.events() if e.kind is EventKind.DIVERGED]
    helped = None
    if reasons:
        helped = (o_final < w_final) or (w_unstable and on_stable) if math.isfinite(
            o_final) else False
    return Pair(index, space_name, params, w_final, w_best, w_unstable,
                [e.reason for e in watch.events() if e.kind is EventKind.ALARM],
                o_final, o_best, on_stable, reasons, int(summary.get("global_epochs", 0)),
                helped, time.perf_counter() - start)


def table(pairs: list[Pair]) -> list[dict[str, Any]]:
    """Per reason (of a run's first divergence): fired, helped, precision, would-be
    unstable; and the alarms the watch runs raised."""
    rows = []
    alarms = Counter(r for p in pairs for r in set(p.watch_alarms))
    for reason in REASONS:
        acted = [p for p in pairs if p.on_reasons and p.on_reasons[0] == reason]
        helped = sum(bool(p.helped) for p in acted)
        rows.append({"reason": reason, "fired": len(acted), "helped": helped,
                     "precision": helped / len(acted) if acted else None,
                     "would_be_unstable": sum(p.watch_unstable for p in acted),
                     "watch_runs_alarmed": alarms.get(reason, 0)})
    return rows


def overall(pairs: list[Pair]) -> dict[str, Any]:
    acted = [p for p in pairs if p.on_reasons]
    unstable = [p for p in pairs if p.watch_unstable]
    helped = sum(bool(p.helped) for p in acted)
    return {"configs": len(pairs), "acted": len(acted), "helped": helped,
            "precision": helped / len(acted) if acted else None,
            "unstable_left_alone": len(unstable),
            "unstable_acted_on": sum(bool(p.on_reasons) for p in unstable),
            "recall": (sum(bool(p.on_reasons) for p in unstable) / len(unstable)
                       if unstable else None),
            "unstable_after_recovery": sum(not p.on_stable for p in pairs),
            "extra_epochs": sum(p.on_epochs for p in acted)}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0, help="of the configuration sampler")
    parser.add_argument("--epochs", type=int, default=None, help="override the spaces'")
    parser.add_argument("--max-tasks", type=int, default=60)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    configs = sample_configs(args.configs, args.seed, args.max_tasks)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autotune-intervention-") as tmp:
        jobs = [(i, name, params, args.epochs, args.max_tasks, tmp)
                for i, (name, params) in enumerate(configs)]
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        with ProcessPoolExecutor(args.procs) as pool:
            pairs = []
            for pair in pool.map(run_pair, jobs):
                pairs.append(pair)
                what = ("left alone" if not pair.on_reasons else
                        f"{'+'.join(pair.on_reasons)} -> {'helped' if pair.helped else 'NOT'}")
                print(f"{pair.index:3d} {pair.space:13s} watch {pair.watch_final:7.4f}"
                      f"{' unstable' if pair.watch_unstable else '         '}  on "
                      f"{pair.on_final:7.4f}  {what}", flush=True)
    rows, total = table(pairs), overall(pairs)
    print("\nreason           fired  helped  precision  would-be-unstable  watch-alarmed")
    for r in rows:
        print(f"{r['reason']:16s} {r['fired']:5d}  {r['helped']:6d}  {_pct(r['precision']):>9s}"
              f"  {r['would_be_unstable']:17d}  {r['watch_runs_alarmed']:13d}")
    print(f"overall: {total['acted']} of {total['configs']} runs acted on, precision "
          f"{_pct(total['precision'])}, recall {_pct(total['recall'])} "
          f"({total['unstable_acted_on']} of {total['unstable_left_alone']} runs that ended "
          f"unstable left alone); wall {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"pairs": [asdict(p) for p in pairs], "table": rows,
                                         "overall": total}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
