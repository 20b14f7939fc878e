"""Validation curves against the colour-frequency level, to check the collapse detector.

For each learning rate (no recovery: the raw curve), trains the profile and records the
training and validation loss of every epoch beside the two marginal losses; then replays
the detector on the curve with a patience of 2 and 3 epochs and says at which epoch, if
any, it would have called a collapse. A healthy run must never be called collapsed; a run
stuck at the level should be. Writes one JSON line per run.

    python benchmarks/collapse_curves.py --profile tiny --lrs 0.003 0.03 --epochs 6
    python benchmarks/collapse_curves.py --profile default --device cuda --epochs 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from autotune.detect import DetectorConfig, Reason, check_epoch
from trainer.config import resolve
from trainer.data import build_data
from trainer.loop import Diverged, Trainer, pick_device


def first_collapse(history: list[dict[str, Any]], cfg: DetectorConfig) -> int | None:
    """The epoch at which the epoch-level detectors would first say COLLAPSED."""
    for i in range(1, len(history) + 1):
        verdict = check_epoch(history[:i], cfg)
        if verdict.reason is Reason.COLLAPSED:
            return int(history[i - 1]["epoch"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warmup", type=float, nargs="+", default=[0.0])
    parser.add_argument("--lrs", type=float, nargs="+",
                        default=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    data = None
    for warmup in args.warmup:
        for lr in args.lrs:
            config = resolve(args.profile, {}, {"learning_rate": lr, "warmup_epochs": warmup,
                                                "epochs": args.epochs})
            data = data or build_data(config)
            trainer = Trainer(config, data, device)
            history: list[dict[str, Any]] = []
            start = time.perf_counter()
            try:
                for _ in range(config.epochs):
                    train = trainer.train_epoch()
                    val = trainer.evaluate("val")
                    history.append({"epoch": trainer.epoch, "train_loss": train["train_loss"],
                                    "val_loss": val["val_loss"],
                                    "val_cell_acc": val["val_cell_acc"]})
            except Diverged as exc:
                history.append({"epoch": trainer.epoch + 1, "train_loss": float("nan"),
                                "val_loss": float("nan"), "diverged": str(exc)})
            found = {}
            for patience in (2, 3):
                cfg = DetectorConfig(max_loss_increase=1e6, marginal_loss=trainer.marginal_loss,
                                     train_marginal_loss=trainer.train_marginal_loss,
                                     collapse_patience=patience, warmup_epochs=warmup)
                found[f"collapse_at_patience_{patience}"] = first_collapse(history, cfg)
            print(json.dumps({
                "profile": args.profile, "device": str(device), "lr": lr, "warmup": warmup,
                "marginal_loss": round(trainer.marginal_loss, 4),
                "train_marginal_loss": round(trainer.train_marginal_loss, 4), **found,
                "val": [round(h["val_loss"], 4) for h in history],
                "train": [round(h["train_loss"], 4) for h in history],
                "best_val": round(min(h["val_loss"] for h in history), 4),
                "wall_s": round(time.perf_counter() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
