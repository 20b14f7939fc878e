"""Epoch times of the tiny model on 2 threads, with and without a busy neighbour, under an
OpenMP wait policy, with torch's threads fixed or shared (`autotune.recovery.threads`).

    python benchmarks/thread_share.py --policy default --share --busy 1
    python benchmarks/thread_share.py --policy PASSIVE --busy 1
    python benchmarks/thread_share.py --policy default --spincount 100000 --share

One process a setting (the policy is read when torch loads, so it is set before the
import); prints one line: the setting, the total, and each epoch's seconds @ threads.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from neighbours import busy_neighbours  # benchmarks/neighbours.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="default", choices=("default", "ACTIVE", "PASSIVE"),
                        help="OMP_WAIT_POLICY (default: unset, libgomp's own)")
    parser.add_argument("--spincount", type=int, default=None, help="GOMP_SPINCOUNT, when set")
    parser.add_argument("--share", action="store_true", help="the supervisor's core share")
    parser.add_argument("--busy", type=int, default=0, help="busy single-threaded neighbours")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    if args.busy < 0:
        parser.error(f"--busy must be 0 or more but got {args.busy}")
    if args.epochs < 1:
        parser.error(f"--epochs must be 1 or more but got {args.epochs}")
    if args.policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.policy
    else:
        os.environ.pop("OMP_WAIT_POLICY", None)
    if args.spincount is not None:
        os.environ["GOMP_SPINCOUNT"] = str(args.spincount)
    os.environ.pop("OMP_NUM_THREADS", None)

    import torch

    from autotune.recovery.threads import CoreShare
    from trainer.config import resolve
    from trainer.data import build_data
    from trainer.loop import Trainer

    torch.set_num_threads(2)
    config = resolve("tiny", {}, {"max_tasks": 60, "epochs": args.epochs, "batch_size": 16})
    trainer = Trainer(config, build_data(config), "cpu")
    share = CoreShare(most=2) if args.share else None
    epochs: list[str] = []
    with busy_neighbours(args.busy):
        start = time.perf_counter()
        for _ in range(args.epochs):
            began, threads = time.perf_counter(), torch.get_num_threads()
            trainer.train_epoch()
            trainer.evaluate()
            epochs.append(f"{time.perf_counter() - began:.2f}s@{threads}")
            if share is not None:
                share.update()
        total = time.perf_counter() - start
    setting = (f"policy={args.policy} spincount={args.spincount or '-'} "
               f"{'shared' if args.share else 'fixed'} busy={args.busy}")
    sys.stdout.write(f"{setting}  total {total:.1f} s  {' '.join(epochs)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
