"""PyTorch Lightning's CSVLogger `metrics.csv`: step rows and epoch rows, merged by step.

Lightning writes one row per `log` call site and step: per-step training rows
(`train_loss_step`, or `train_loss` logged with `on_step`), epoch-end rows (`*_epoch`,
`val_loss`) at the step of the epoch's last batch, and LearningRateMonitor rows
(`lr-Adam`, `lr-AdamW/pg1`) with an empty epoch. Rows of one step are merged; a row
without an epoch takes the epoch of its step's other rows (or the one before). A
`lightning_logs` folder holds one `version_N` per run of the script: the latest is read.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from autotune.diagnose.readers.columns import Log, normalise, records_of
from autotune.diagnose.readers.tabular import csv_rows

__all__ = ["is_lightning", "latest_metrics", "read_lightning"]


def is_lightning(header: list[str]) -> bool:
    """A CSVLogger header: `step` beside `epoch`, and Lightning's names."""
    names = {normalise(h) for h in header}
    if "step" not in names or "epoch" not in names:
        return False
    return any(n.endswith(("_step", "_epoch")) or n.startswith("lr_") for n in names) or any(
        "/" in h for h in header)


def latest_metrics(folder: Path) -> Path | None:
    """The metrics.csv of the latest `version_N` under `folder` (or `folder`'s own)."""
    if (folder / "metrics.csv").is_file():
        return folder / "metrics.csv"
    versions = [(int(m.group(1)), p) for p in folder.glob("**/version_*/metrics.csv")
                if (m := re.fullmatch(r"version_(\d+)", p.parent.name))]
    return max(versions)[1] if versions else None


def read_lightning(path: Path, text: str, given: Mapping[str, str]) -> Log:
    rows, header = csv_rows(text, path)
    records, mapping, _ = records_of(rows, path, {**_sparse_steps(rows, header, given),
                                                  **given}, names=header)
    epoch_of: dict[float, float] = {r["step"]: r["epoch"] for r in records
                                    if "epoch" in r and "step" in r}
    merged: dict[float, dict[str, float]] = {}
    last_epoch = 0.0
    for record in records:
        step = record.get("step", math.nan)
        epoch = record.get("epoch", epoch_of.get(step, last_epoch))
        last_epoch = epoch
        into = merged.setdefault(step, {"epoch": epoch, "step": step})
        for key, value in record.items():
            if key not in ("epoch", "step") and key not in into:
                into[key] = value
    out = list(merged.values())
    per_step = normalise(mapping.get("train_loss", "")).endswith("_step") or (
        len({r["epoch"] for r in out if "train_loss" in r})
        < len([r for r in out if "train_loss" in r]))
    return Log(path, "lightning", out, mapping, per_step=per_step)


def _sparse_steps(rows: list, header: list[str], given: Mapping[str, str]) -> dict[str, str]:
    """Judge `x_epoch` rather than `x_step` when fewer steps than epochs were logged."""
    if "train_loss" in given:
        return {}
    by_norm = {normalise(h): h for h in header}
    for step_name in [h for h in header if normalise(h).endswith("loss_step")]:
        epoch_name = by_norm.get(normalise(step_name)[:-len("_step")] + "_epoch")
        if epoch_name is None or not normalise(step_name).startswith(("train", "loss")):
            continue
        steps = sum(1 for _, r in rows if str(r.get(step_name, "")).strip())
        epochs = sum(1 for _, r in rows if str(r.get(epoch_name, "")).strip())
        if steps < 2 * epochs:
            return {"train_loss": epoch_name}
    return {}
