"""Synthetic but realistic logs of the failures engineers meet (the seed story's bugs)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.diagnose import (
    Finding,
)
from trainer.config import TrainConfig
from trainer.schedule import lr_at_epoch

Rows = list[dict[str, Any]]
Flags = dict[str, Any]


def planned(position: float, lr: float = 1e-3, warmup: float = 2.0, epochs: int = 30,
            schedule: str = "cosine") -> float:
    config = TrainConfig().replace(learning_rate=lr, warmup_epochs=warmup, epochs=epochs,
                                   schedule=schedule)
    return lr_at_epoch(position, config)


def write_csv(path: Path, rows: Rows) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, na_rep="nan")
    return path


def write_jsonl(path: Path, rows: Rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# ----------------------------------------------------------------------- the scenarios


def flat_after_warmup() -> tuple[Rows, Flags]:
    """(a) Warmup code sets param_group["lr"] every step: lr flat at the peak for 100 epochs."""
    rows = []
    for e in range(100):  # 0-based labels, lr at the end of the epoch
        loss = 0.3 + 2.0 * math.exp(-e / 15) + 0.01 * math.sin(e)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.05,
                     "lr": 1e-3 * min(1.0, (e + 1) / 5)})
    return rows, {"lr": 1e-3, "warmup_epochs": 5, "schedule": "cosine", "epochs": 100}


def compounded() -> tuple[Rows, Flags]:
    """(b) Manual warmup multiplied into a chainable scheduler: lr settles at 1/10."""
    rows = []
    for e in range(1, 61):  # 1-based labels, lr at the end
        intended = planned(e, warmup=3, epochs=60)
        rows.append({"epoch": e, "loss": 1.5 + math.exp(-e / 40),
                     "lr": intended * 0.1 ** min(e / 3, 1.0)})
    return rows, {"lr": 1e-3, "warmup_epochs": 3, "schedule": "cosine", "epochs": 60}


def rising_at_peak() -> tuple[Rows, Flags]:
    """(c) The loss falls, then climbs while the lr is still near its peak."""
    rows = []
    for e in range(1, 13):
        loss = 2.0 - 0.25 * (e - 1) if e <= 5 else 1.0 + 0.12 * (e - 5)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1,
                     "lr": planned(e), "grad_norm": 0.5 * 1.3 ** max(e - 5, 0)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


def overfitting() -> tuple[Rows, Flags]:
    """(d) Training loss keeps falling, validation loss rises after epoch 12."""
    rows = []
    for e in range(1, 31):
        val = 0.9 + 0.5 * math.exp(-min(e, 12) / 4) + 0.03 * max(e - 12, 0)
        rows.append({"epoch": e, "train_loss": 0.2 + 1.8 * math.exp(-e / 8), "val_loss": val,
                     "lr": planned(e)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


def nan_at_seven() -> tuple[Rows, Flags]:
    """(e) NaN from epoch 7 on (0-based labels, lr at the start of the epoch)."""
    rows = []
    for e in range(20):
        loss = 0.3 + 2.0 * math.exp(-e / 5) if e < 7 else math.nan
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1,
                     "lr": planned(e, warmup=1, epochs=20)})
    return rows, {"lr": 1e-3, "warmup_epochs": 1, "schedule": "cosine", "epochs": 20}


def one_spike() -> tuple[Rows, Flags]:
    """(f) One bad batch: the loss triples at epoch 20 and comes straight back."""
    rows = []
    for e in range(1, 41):
        loss = 0.3 + 1.7 * math.exp(-e / 10)
        rows.append({"epoch": e, "train_loss": loss * (3.0 if e == 20 else 1.0),
                     "val_loss": loss + 0.1, "lr": planned(e, epochs=40)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 40}


def healthy(position: Callable[[int], float] = float, first: int = 0
            ) -> tuple[Rows, Flags]:
    """(g) Loss and validation loss fall, lr follows the schedule."""
    rows = []
    for e in range(first, first + 50):
        loss = 0.25 + 2.0 * math.exp(-e / 12)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1 + 0.002 * (e % 2),
                     "lr": planned(position(e), warmup=3, epochs=50)})
    return rows, {"lr": 1e-3, "warmup_epochs": 3, "schedule": "cosine", "epochs": 50}


def smoothed() -> tuple[Rows, Flags]:
    """(h) Label smoothing 0.1 over 10 colours: the training loss flattens near 0.5."""
    rows = []
    for e in range(1, 31):
        rows.append({"epoch": e, "train_loss": 0.52 + 1.5 * math.exp(-e / 6),
                     "val_loss": 0.1 + 1.2 * math.exp(-e / 6), "lr": planned(e)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


SCENARIOS: list[tuple[str, Callable[[], tuple[Rows, Flags]], str, list[str]]] = [
    ("flat_after_warmup", flat_after_warmup, "csv", ["lr_schedule_mismatch"]),
    ("compounded", compounded, "jsonl", ["lr_schedule_mismatch"]),
    ("rising_at_peak", rising_at_peak, "csv", ["lr_too_high"]),
    ("overfitting", overfitting, "jsonl", ["overfitting"]),
    ("nan_at_seven", nan_at_seven, "csv", ["nonfinite_loss"]),
    ("one_spike", one_spike, "jsonl", ["loss_spike"]),
    ("healthy", healthy, "csv", ["healthy"]),
]


