"""Hugging Face Trainer's `trainer_state.json`: one JSON object with a `log_history`.

Its entries are of three kinds, told apart by their keys: training entries every
`logging_steps` (`loss`, `learning_rate`, `grad_norm`, a fractional `epoch`, `step`),
evaluation entries (`eval_loss`, or `eval_<set>_loss` for each named eval set), and one
summary entry at the end (`train_loss`, the mean over the whole run, with `train_runtime`)
that is not a step and is left out. With several eval sets the first one logged is the
validation loss unless `--column val_loss=eval_<set>_loss` says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.diagnose.readers.columns import Log, merge_rows, number
from autotune.errors import ConfigError, excerpt

__all__ = ["is_trainer_state", "read_trainer_state"]

_SUMMARY = ("train_runtime", "train_samples_per_second", "total_flos")


def is_trainer_state(loaded: Any) -> bool:
    return isinstance(loaded, dict) and isinstance(loaded.get("log_history"), list)


def read_trainer_state(path: Path, state: Mapping[str, Any], given: Mapping[str, str]) -> Log:
    history = [e for e in state["log_history"] if isinstance(e, dict)]
    train_key = given.get("train_loss", "loss")
    val_key = given.get("val_loss") or _eval_key(history)
    records = []
    for n, entry in enumerate(history):
        if any(k in entry for k in _SUMMARY) and train_key not in entry:
            continue  # the run's summary, not a step
        names = {"epoch": "epoch", "step": "step", "train_loss": train_key,
                 "val_loss": val_key, "lr": given.get("lr", "learning_rate"),
                 "grad_norm": given.get("grad_norm", "grad_norm")}
        record = {ours: _number(entry, theirs, path, n) for ours, theirs in names.items()}
        kept = {k: v for k, v in record.items() if v is not None}
        if any(k in kept for k in ("train_loss", "val_loss")):
            records.append(kept)
    if not records:
        keys = sorted({k for e in history for k in e})
        raise ConfigError(f"{path}: missing column 'train_loss'; the log_history has no "
                          f"training or evaluation loss (found: {', '.join(keys) or 'none'}); "
                          f"name yours with --column train_loss=THEIR_NAME.")
    for kept in records:
        if "step" not in kept:
            kept["step"] = math.nan
    planned = _number(state, "num_train_epochs", path, None)
    columns = {"epoch": "epoch", "step": "step", "train_loss": train_key, "lr": "learning_rate",
               "grad_norm": "grad_norm", **({"val_loss": val_key} if val_key else {})}
    return Log(path, "huggingface", merge_rows(records, "step"), columns, per_step=True,
               planned_epochs=int(planned) if planned and planned >= 1 else None,
               rows=len(history), val_size=_eval_size(history, val_key))


def _eval_size(history: list[dict[str, Any]], val_key: str | None) -> int | None:
    """Examples in the eval set: an eval entry's runtime x samples per second."""
    prefix = val_key[:-len("loss")] if val_key and val_key.endswith("loss") else "eval_"
    for entry in history:
        runtime = entry.get(prefix + "runtime", entry.get("eval_runtime"))
        rate = entry.get(prefix + "samples_per_second", entry.get("eval_samples_per_second"))
        if isinstance(runtime, (int, float)) and isinstance(rate, (int, float)) and (
                runtime > 0 and rate > 0):
            return max(int(round(runtime * rate)), 1)
    return None


def _number(entry: Mapping[str, Any], key: str | None, path: Path, n: int | None
            ) -> float | None:
    """`entry[key]` as a number (None when absent); ConfigError naming where it is."""
    if key is None:
        return None
    value = entry.get(key)
    try:
        out = number(value)
    except (ValueError, TypeError):
        where = f"log_history[{n}]" if n is not None else "the state"
        raise ConfigError(f"{path}: {where} {excerpt(key, 40)} is {excerpt(value, 40)}, not a "
                          f"number.") from None
    if n is None and out is not None and not math.isfinite(out):
        return None
    return out


def _eval_key(history: list[dict[str, Any]]) -> str | None:
    for entry in history:
        if "eval_loss" in entry:
            return "eval_loss"
        named = [k for k in entry if k.startswith("eval_") and k.endswith("_loss")]
        if named:
            return named[0]
    return None
