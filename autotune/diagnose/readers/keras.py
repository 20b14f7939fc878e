"""Keras' CSVLogger file (any name, any suffix): `epoch` first, then the logs of each epoch.

Keras counts epochs from 0 and writes `loss`, `val_loss`, and `learning_rate` (or `lr` in
older versions) when a callback puts it in the logs. With `append=True` a second run of
the script continues the same file, its epochs starting again at 0: each run is then its
own line of training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from autotune.diagnose.readers.columns import Log, normalise
from autotune.diagnose.readers.tabular import read_csv

__all__ = ["is_keras", "read_keras"]


def is_keras(header: list[str]) -> bool:
    names = [normalise(h) for h in header]
    return bool(names) and names[0] == "epoch" and "step" not in names and (
        "loss" in names or any(n.endswith("_loss") for n in names))


def read_keras(path: Path, given: Mapping[str, str], sep: str) -> Log:
    return read_csv(path, given, sep=sep, fmt="keras")
