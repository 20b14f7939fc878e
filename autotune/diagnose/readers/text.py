"""Text logs: a training script's printed lines, with `name=value`, `name: value` or
`Name Value` pairs on each line (`Epoch [021/30] TrainLoss=0.7671 ValLoss=1.1477
LR=1.00e-04`, `epoch: 3, loss: 0.52`, `Epoch 3 Loss 0.52 LR 0.001`).

Names are matched like column names; a line without a loss, learning rate or gradient
norm is left out (banners, warnings). A line without an epoch takes the last one seen (a
`Epoch 3/30` line before the metrics of that epoch), and `Epoch [3/30]` tells the planned
epochs too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autotune.diagnose.readers.columns import Log, merge_rows, normalise, records_of
from trainer.errors import ConfigError

__all__ = ["read_text_log"]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf)"
# A name may be two words when the first says which split it is: `Training Loss: 0.06`,
# `Validation Loss: 0.07`, `val loss 0.07` (one word, `Loss`, would make both a training loss).
_SPLIT = r"(?:(?i:train|training|val|valid|validation|eval|test|dev)\s+)?"
_PAIR = re.compile(rf"({_SPLIT}[A-Za-z][\w/.\-]*)\s*(?:=|:|\s)\s*\[?\s*({_NUMBER})"
                   rf"(?:\s*/\s*(\d+))?\]?(?![\w.:])")


def read_text_log(path: Path, text: str, given: Mapping[str, str]) -> Log:
    rows: list[tuple[int, dict[str, Any]]] = []
    planned: int | None = None
    epoch_name: str | None = None
    last_epoch: str | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        pairs: dict[str, Any] = {}
        for name, value, total in _PAIR.findall(line):
            name = re.sub(r"\s+", "_", name)
            pairs.setdefault(name, value)
            if normalise(name) in ("epoch", "epochs") and total:
                planned = int(total)
        names = {normalise(k): k for k in pairs}
        if "epoch" in names:
            epoch_name, last_epoch = names["epoch"], pairs[names["epoch"]]
        elif last_epoch is not None and epoch_name is not None:
            pairs[epoch_name] = last_epoch
        if pairs:
            rows.append((n, pairs))
    if not rows:
        raise ConfigError(f"{path} is not a training log: no line has name=value, "
                          f"name: value or 'Name Value' pairs (or CSV, JSON, TensorBoard).")
    records, mapping, _ = records_of(rows, path, given)
    key = "epoch" if "epoch" in mapping else "step"
    records = [r for r in records if key in r]
    return Log(path, "text", merge_rows(records, key), mapping, planned_epochs=planned,
               unit="epoch" if key == "epoch" else "step",
               per_step=len({r[key] for r in records}) < len(records))
