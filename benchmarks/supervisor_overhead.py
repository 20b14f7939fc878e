"""The supervisor's cost per epoch: the ARC trainer bare against the same run supervised.

    python benchmarks/supervisor_overhead.py [--epochs 4] [--pairs 4] [--json OUT]

`bare` is the loop a user writes: `train_epoch()` then `evaluate("val")`, epoch after
epoch. `supervised` is the same trainer (same configuration, seed and data) under
`autotune.recovery.supervisor.Supervisor` with recovery on: the step and epoch detectors,
the metrics line, the checkpoint of every epoch (kept in memory, written by the background
writer) and the initial one, waited for before the run ends. Both run in one process, one
thread, alternating (bare, supervised, bare, ...), so the machine's drift hits both; each
pair gives a ratio, and the median ratio is the figure. Both arms must end with the same
validation loss (the supervisor changes nothing of a run that does not diverge).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from autotune.recovery.rundir import RunDir
from autotune.recovery.settings import SupervisorConfig
from autotune.recovery.supervisor import Supervisor
from trainer.config import TrainConfig, resolve
from trainer.data import ArcData, build_data
from trainer.inject import Injector
from trainer.loop import Trainer

SMALL = {"max_tasks": 40, "batch_size": 32, "learning_rate": 1e-3}


def bare(config: TrainConfig, data: ArcData) -> tuple[float, float]:
    """Seconds of `config.epochs` epochs of the plain loop, and the last validation loss."""
    trainer = Trainer(config, data, "cpu", Injector())
    start = time.perf_counter()
    val = float("nan")
    for _ in range(config.epochs):
        trainer.train_epoch()
        val = trainer.evaluate("val")["val_loss"]
    return time.perf_counter() - start, val


def supervised(config: TrainConfig, data: ArcData, folder: Path) -> tuple[float, float]:
    """The same run under the supervisor (from its initial checkpoint to the last write)."""
    trainer = Trainer(config, data, "cpu", Injector())
    run = RunDir.create(folder, config.to_dict())
    start = time.perf_counter()
    supervisor = Supervisor(trainer, run, epochs=config.epochs, settings=SupervisorConfig(),
                            config=config.to_dict())
    supervisor.start()
    result = supervisor.fit()
    return time.perf_counter() - start, float(result.final["val_loss"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.pairs < 1:
        parser.error(f"--epochs and --pairs must be >= 1 but got {args.epochs}, {args.pairs}")
    torch.set_num_threads(1)
    config = resolve("tiny", {}, {**SMALL, "epochs": args.epochs})
    data = build_data(config)
    bare(config, data)  # warm-up: allocator, first-call costs
    rows = []
    with tempfile.TemporaryDirectory(prefix="autotune-overhead-") as tmp:
        for i in range(args.pairs):
            b, b_val = bare(config, data)
            s, s_val = supervised(config, data, Path(tmp) / f"run-{i}")
            if b_val != s_val:
                print(f"pair {i}: validation losses differ ({b_val} bare, {s_val} "
                      f"supervised)", file=sys.stderr)
                return 1
            rows.append({"bare_s": b, "supervised_s": s, "ratio": s / b})
            print(f"pair {i}: bare {b / args.epochs:.3f} s/epoch, supervised "
                  f"{s / args.epochs:.3f} s/epoch, ratio {s / b:.3f}", flush=True)
    ratios = [r["ratio"] for r in rows]
    print(f"median ratio supervised/bare {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}) over {len(rows)} pairs of {args.epochs} epochs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
