"""Which change gets a collapsed configuration to learn? Restarts from scratch, measured.

Takes configurations of the aggressive-LR space that collapsed in a search (the model sat
at the colour-frequency level), trains each from its initial weights with no change and
under each candidate fix (a third or a tenth of the learning rate, clipping on, both, a
warmup one epoch longer), with recovery off, and prints the best validation loss and the
epoch at which the collapse detector (patience 2) would call it. This is what chose the
`collapsed` ladder in autotune/recovery/ladders.py.

    python benchmarks/collapse_fixes.py                 # 8 configurations, ~7 min on 2 cores
    python benchmarks/collapse_fixes.py --json fixes.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from autotune.detect import DetectorConfig, check_collapse
from autotune.search.space import load_space
from trainer.data import ArcData, build_data
from trainer.loop import Diverged, Trainer

# (learning_rate, grad_clip, warmup_epochs, label_smoothing): collapsed in search studies
# of the aggressive_lr space (seed 0 of benchmarks/search_vs_optuna.py, rounded) and two
# more peaks from the ends of its collapsing range.
CASES = [(0.0052, 0.0, 0.64, 0.1), (0.00785, 0.0, 0.16, 0.0), (0.0075, 1.0, 0.14, 0.1),
         (0.0745, 0.0, 0.06, 0.1), (0.041, 1.0, 0.93, 0.1), (0.050, 1.0, 0.62, 0.0),
         (0.14, 1.0, 0.30, 0.0), (0.02, 0.0, 0.50, 0.0)]
FIXES: dict[str, dict[str, float]] = {
    "none": {}, "lr/10": {"lr": 0.1}, "lr/3": {"lr": 1 / 3}, "clip": {"clip": 1.0},
    "clip+lr/3": {"clip": 1.0, "lr": 1 / 3}, "clip+lr/10": {"clip": 1.0, "lr": 0.1},
    "warmup+1": {"warmup": 1.0}}


def fixed(case: tuple[float, float, float, float], fix: dict[str, float]) -> dict[str, Any]:
    lr, clip, warmup, smoothing = case
    return {"learning_rate": lr * fix.get("lr", 1.0),
            "grad_clip": fix.get("clip", clip) if clip == 0 else clip,
            "warmup_epochs": warmup + fix.get("warmup", 0.0), "label_smoothing": smoothing}


def run(params: dict[str, Any], data: dict[str, ArcData]) -> dict[str, Any]:
    config = load_space("aggressive_lr").config(params, "tiny", {})
    key = f"{config.max_tasks}/{config.max_grid}"
    trainer = Trainer(config, data.setdefault(key, build_data(config)), "cpu")
    watch = DetectorConfig(max_loss_increase=1e9, marginal_loss=trainer.marginal_loss,
                           train_marginal_loss=trainer.train_marginal_loss,
                           warmup_epochs=config.warmup_epochs, collapse_patience=2)
    history: list[dict[str, float]] = []
    called = None
    for epoch in range(1, config.epochs + 1):
        try:
            train = trainer.train_epoch()
        except Diverged:
            history.append({"epoch": epoch, "train_loss": math.nan, "val_loss": math.nan})
            break
        val = trainer.evaluate("val")["val_loss"]
        history.append({"epoch": epoch, "train_loss": train["train_loss"], "val_loss": val})
        if called is None and check_collapse(history, watch):
            called = epoch
    vals = [h["val_loss"] for h in history]
    return {"best": min(vals), "vals": [round(v, 3) for v in vals], "collapse_at": called,
            "marginal_loss": trainer.marginal_loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    data: dict[str, ArcData] = {}
    rows = []
    for case in CASES:
        for name, fix in FIXES.items():
            if "clip" in fix and case[1] > 0:
                continue  # clipping already on: the same run as without the fix
            params = fixed(case, fix)
            row = {"case": dict(zip(("learning_rate", "grad_clip", "warmup_epochs",
                                     "label_smoothing"), case)), "fix": name, **run(params, data)}
            rows.append(row)
            print(f"lr {case[0]:<7g} clip {case[1]:g} warmup {case[2]:<4g} smoothing "
                  f"{case[3]:<3g} {name:11s} best {row['best']:.3f}  collapse at "
                  f"{row['collapse_at']}  {row['vals']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
