"""Text logs: a training script's printed lines, with `name=value`, `name: value` or
`Name Value` pairs on each line (`Epoch [021/30] TrainLoss=0.7671 ValLoss=1.1477
LR=1.00e-04`, `epoch: 3, loss: 0.52`, `Epoch 3 Loss 0.52 LR 0.001`).

Names are matched like column names; a line without a loss, learning rate or gradient
norm is left out (banners, warnings). A line without an epoch takes the last one seen (a
`Epoch 3/30` line before the metrics of that epoch), and `Epoch [3/30]` tells the planned
epochs too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autotune.diagnose.readers.columns import Log, normalise
from autotune.diagnose.readers.table import Remap, Table
from autotune.diagnose.readers.tabular import opened, read_block
from autotune.errors import ConfigError

__all__ = ["TextLines", "read_text_log"]

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf)"
# A name may be two words when the first says which split it is: `Training Loss: 0.06`,
# `Validation Loss: 0.07`, `val loss 0.07` (one word, `Loss`, would make both a training loss).
_SPLIT = r"(?:(?i:train|training|val|valid|validation|eval|test|dev)\s+)?"
_PAIR = re.compile(rf"({_SPLIT}[A-Za-z][\w/.\-]*)\s*(?:=|:|\s)\s*\[?\s*({_NUMBER})"
                   rf"(?:\s*/\s*(\d+))?\]?(?![\w.:])")


def read_text_log(path: Path, given: Mapping[str, str]) -> Log:
    """A text log, read in blocks of lines (see the module docstring)."""
    names: list[str] = []
    while True:
        parser = TextLines(path, given, names)
        try:
            with opened(path) as f:
                while lines := read_block(f, path):
                    parser.add(lines)
            return parser.log()
        except Remap as remap:  # a name first seen late: read again, knowing it
            names = remap.names


class TextLines:
    """Lines of a text log into a `Table`, as they come (`--follow` feeds it too).

    The columns are resolved from the first block of lines that has a metric (and the
    `names` known from an earlier reading); `Remap` when a later one changes them.
    """

    def __init__(self, path: Path, given: Mapping[str, str], names: Sequence[str] = ()
                 ) -> None:
        self.path, self.given, self.names = path, dict(given), list(names)
        self.planned: int | None = None
        self.table: Table | None = None
        self._line = 1
        self._epoch_name: str | None = None
        self._last_epoch: str | None = None
        self._unread: ConfigError | None = None

    def add(self, lines: list[str]) -> None:
        rows = []
        for n, line in enumerate(lines, start=self._line):
            pairs = self._pairs(line)
            if pairs:
                rows.append((n, pairs))
        self._line += len(lines)
        if not rows:
            return
        if self.table is None:
            try:
                self.table = Table.for_json(self.path, [r for _, r in rows], self.given,
                                            self.names)
            except ConfigError as exc:  # no loss yet (a banner, `Epoch 1/30`): wait for one
                self._unread = exc
                return
            self.table.fmt, self.table.drop_keyless = "text", True
        self.table.add_json_rows(rows)

    def _pairs(self, line: str) -> dict[str, Any]:
        pairs: dict[str, Any] = {}
        for name, value, total in _PAIR.findall(line):
            name = re.sub(r"\s+", "_", name)
            pairs.setdefault(name, value)
            if normalise(name) in ("epoch", "epochs") and total:
                self.planned = int(total)
        names = {normalise(k): k for k in pairs}
        if "epoch" in names:
            self._epoch_name, self._last_epoch = names["epoch"], pairs[names["epoch"]]
        elif self._last_epoch is not None and self._epoch_name is not None:
            pairs[self._epoch_name] = self._last_epoch
        return pairs

    def log(self) -> Log:
        if self.table is None and self._unread is not None:
            raise self._unread
        if self.table is None:
            raise ConfigError(f"{self.path} is not a training log: no line has name=value, "
                              f"name: value or 'Name Value' pairs (or CSV, JSON, TensorBoard).")
        return dataclasses.replace(self.table.log(), planned_epochs=self.planned)
