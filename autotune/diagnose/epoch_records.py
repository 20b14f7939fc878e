"""The epoch records `check_epoch` needs, held in bounded size: linear time on any log.

`check_epoch` judges the last record against the ones before it: the best validation loss
before it and the training losses since (did they fall at every record?), and the last
`overfit_patience + 1` records. Handing it the whole history at every record is quadratic
in the log's length. `EpochRecords` keeps the best record, the records since, and, once
those grow long, only what decides the answer: the last records and one pair of records
where the training loss did not fall (a witness; a strictly falling sequence stays strictly
falling when records are left out of it). `check_epoch` on it gives what it gives on the
whole history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from autotune.detect import DetectorConfig

__all__ = ["EpochRecords"]


def _finite(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get(key)
    return float(value) if value is not None and math.isfinite(value) else None


def _falls(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    ta, tb = _finite(a, "train_loss"), _finite(b, "train_loss")
    return ta is not None and tb is not None and tb < ta


class EpochRecords:
    """Records from the best validation loss on, compacted (see the module docstring)."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.tail = max(cfg.overfit_patience + 1, cfg.min_epochs, 4)
        self.records: list[dict[str, Any]] = []
        self._best: float | None = None
        self.count = 0

    def append(self, record: dict[str, Any]) -> None:
        """Add the newest record; `records` is then what `check_epoch` judges."""
        self.records.append(record)
        self.count += 1
        if len(self.records) > 2 * self.tail + 3:
            self._compact()

    def settle(self) -> None:
        """After the newest record was judged: a new best starts the records afresh."""
        last = self.records[-1]
        val = _finite(last, "val_loss")
        if val is not None and (self._best is None or val < self._best):
            self._best = val
            self.records = [last]

    def _compact(self) -> None:
        head, body, tail = self.records[0], self.records[1:-self.tail], self.records[-self.tail:]
        chain = [head, *body, tail[0]]
        witness = next(((a, b) for a, b in zip(chain, chain[1:]) if not _falls(a, b)), None)
        keep = [head]
        if witness is not None:
            keep += [r for r in witness if r is not head and r is not tail[0]]
        self.records = keep + tail
