"""A table of rows (CSV lines, JSON objects) read in blocks into a bounded `Pool`.

`Table` resolves the columns once (from the CSV header, or the keys of the first block of
JSON objects), converts each block to numbers with numpy and pandas (vectorised: "nan" and
"inf" are numbers, an empty cell is a missing value) and pools it; `Remap` says a later
block holds a name that changes the mapping (the reader then starts again knowing it).
The readers of CSV, JSON Lines and text logs and `--follow` feed it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autotune.diagnose.readers.columns import Log, merge_rows, number, require, resolve
from autotune.diagnose.readers.pool import KEYS, ROW_KEYS, Pool
from autotune.errors import ConfigError

__all__ = ["Remap", "Rows", "Table", "csv_rows"]

Rows = list[tuple[int, dict[str, Any]]]


def csv_rows(text: str, path: Path, sep: str = ",") -> tuple[Rows, list[str]]:
    """(line number, row) of a CSV text and its header."""
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            skipinitialspace=True, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a valid CSV file: {first}.") from None
    header = [str(c).strip() for c in frame.columns]
    frame.columns = header
    # Line numbers as an editor shows them: the header is line 1.
    return [(i + 2, row) for i, row in enumerate(frame.to_dict("records"))], header


class Remap(Exception):
    """A block holds a column name that changes how the columns map (a `val_loss` first
    logged after the first block): the reader starts again, knowing all of `names`."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(", ".join(names))
        self.names = names


class Table:
    """Rows of a table (CSV or JSON objects) into a `Pool`, in blocks, vectorised.

    The columns are resolved once (from the CSV header, or the keys of the first block of
    JSON objects); `add_csv` / `add_json_rows` convert a block to numbers and pool it;
    `log` gives the `Log`. `--follow` feeds it the lines a trainer appends.
    """

    def __init__(self, path: Path, names: Sequence[str], given: Mapping[str, str], fmt: str,
                 sep: str = ",") -> None:
        self.path, self.fmt, self.sep = path, fmt, sep
        self.names = list(names)
        self.mapping = resolve(self.names, given, path)
        require(self.mapping, self.names, path)
        self.key = "epoch" if "epoch" in self.mapping else "step"
        self.pool = Pool()
        self.per_step = False
        self._last_epoch: float | None = None
        self._header = ""
        self._given = dict(given)
        self.drop_keyless = False
        """Leave out rows without a finite epoch or step (a text log's banners) instead
        of refusing the log."""

    @classmethod
    def for_csv(cls, path: Path, header: str, given: Mapping[str, str], sep: str,
                fmt: str = "csv") -> Table:
        names = csv_rows(header if header.endswith("\n") else header + "\n", path, sep)[1]
        table = cls(path, names, given, fmt, sep)
        table._header = header if header.endswith("\n") else header + "\n"
        return table

    @classmethod
    def for_json(cls, path: Path, objects: Sequence[Mapping[str, Any]],
                 given: Mapping[str, str], names: Sequence[str] = ()) -> Table:
        seen: dict[str, None] = dict.fromkeys(names)
        for row in objects:
            seen.update(dict.fromkeys(str(k) for k in row))
        return cls(path, list(seen), given, "jsonl")

    def add_csv(self, lines: Sequence[str], first: int) -> None:
        """Add CSV lines (without the header); `first` is the line number of the first."""
        text = "".join(lines)
        if not text.strip():
            return
        used = list(dict.fromkeys(self.mapping.values()))
        filled = [first + i for i, line in enumerate(lines) if line.strip()]
        frame = self._parse(text, used, float)
        if frame is None:  # text a float column cannot hold: read as text to name it
            frame = self._parse(text, used, str)
            assert frame is not None
            numbers = np.asarray(filled[:len(frame)], dtype=np.int64)
            columns = {ours: _csv_numbers(frame[theirs], numbers, self.path, ours)
                       for ours, theirs in self.mapping.items()}
        else:
            numbers = np.asarray(filled[:len(frame)], dtype=np.int64)
            columns = {}
            for ours, theirs in self.mapping.items():
                values = frame[theirs].to_numpy(dtype=float)
                columns[ours] = (values, ~np.isnan(values))
            if _NAN_TEXT.search(text):
                self._tell_nan_from_missing(text, used, columns)
        self._add(columns, numbers, lambda ours, i: frame[self.mapping[ours]].iloc[i])

    def _tell_nan_from_missing(self, text: str, used: list[str],
                               columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """An empty cell and "nan" both parse as NaN: where a column holds NaN, its text
        says which (a NaN loss is a finding, a missing one is not)."""
        frame = self._parse(text, used, str)
        assert frame is not None
        for ours, (values, has) in columns.items():
            gaps = np.flatnonzero(~has)
            if len(gaps) == 0:
                continue
            cells = frame[self.mapping[ours]].to_numpy()[gaps]
            written = np.fromiter((str(c).strip().lower() in _NAN_CELLS for c in cells), bool,
                                  len(cells))
            has[gaps[written]] = True

    def _parse(self, text: str, used: list[str], dtype: type) -> pd.DataFrame | None:
        """The used columns of a block of CSV lines; None when `dtype` is float and a value
        is not a number."""
        try:
            frame = pd.read_csv(io.StringIO(self._header + text), dtype=dtype,
                                keep_default_na=False, skipinitialspace=True, sep=self.sep,
                                usecols=lambda c: str(c).strip() in used,
                                skip_blank_lines=True,
                                na_values=list(_MISSING_CELLS) if dtype is float else None)
        except ValueError as exc:
            if dtype is float and not isinstance(exc, pd.errors.ParserError):
                return None
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(
                exc).__name__
            raise ConfigError(f"{self.path} is not a valid CSV file: {message}.") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame

    def add_json_rows(self, rows: Rows) -> None:
        """Add (line number, object) rows; `Remap` when a new name changes the mapping."""
        if not rows:
            return
        numbers = np.asarray([n for n, _ in rows], dtype=np.int64)
        objects = [r for _, r in rows]
        new = set().union(*objects) - set(self.names)
        if new:
            names = self.names + sorted(str(n) for n in new)
            if resolve(names, self._given, self.path) != self.mapping:
                raise Remap(names)
            self.names = names
        columns = {ours: _json_numbers([o.get(theirs) for o in objects], numbers, self.path,
                                       ours)
                   for ours, theirs in self.mapping.items()}
        self._add(columns, numbers, lambda ours, i: objects[i].get(self.mapping[ours]))

    def _add(self, columns: dict[str, tuple[np.ndarray, np.ndarray]], lines: np.ndarray,
             raw: Any) -> None:
        n = len(lines)
        keep = np.zeros(n, bool)
        for k in ROW_KEYS:
            if k in columns:
                keep |= columns[k][1]
        values, has = columns[self.key]
        missing = keep & ~(has & np.isfinite(values))
        if self.drop_keyless:
            keep &= ~missing
        elif missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ConfigError(f"{self.path}: line {int(lines[i])} has no finite {self.key} "
                              f"(got {raw(self.key, i)!r}); every record needs one.")
        self._note_per_step(columns, keep)
        fed: dict[str, np.ndarray] = {}
        for ours, (vals, present) in columns.items():
            if ours not in KEYS and ours not in ("epoch", "step"):
                continue  # recognised and shown, not judged (accuracy)
            fed[ours] = vals[keep]
            if ours in KEYS:
                fed[f"has_{ours}"] = present[keep]
        self.pool.add(fed, int(keep.sum()))

    def _note_per_step(self, columns: dict[str, tuple[np.ndarray, np.ndarray]],
                       keep: np.ndarray) -> None:
        """Several training records an epoch, or fractional epochs: a per-step log."""
        if self.per_step or "epoch" not in columns or "train_loss" not in columns:
            return
        epochs = columns["epoch"][0][keep & columns["train_loss"][1]]
        if len(epochs) == 0:
            return
        finite = epochs[np.isfinite(epochs)]
        self.per_step = bool(np.any(finite != np.floor(finite))) or len(np.unique(
            epochs)) < len(epochs) or epochs[0] == self._last_epoch
        self._last_epoch = float(epochs[-1])

    def log(self) -> Log:
        records = self.pool.records()
        pooled = self.pool.pooled
        if not pooled:
            records = merge_rows(records, self.key)
            # Below the pool's size the rows are the records: judge repeats exactly.
            self.per_step = _per_step(records)
        return Log(self.path, self.fmt, records, dict(self.mapping), per_step=self.per_step,
                   unit="epoch" if self.key == "epoch" else "step", rows=self.pool.rows,
                   pooled=pooled)


_MISSING = ("", "none", "null")
_MISSING_CELLS = ("", " ", "none", "None", "NONE", "null", "Null", "NULL")
_NAN_TEXT = re.compile(r"(?i)nan")
_NAN_CELLS = frozenset(("nan", "+nan", "-nan"))


def _csv_numbers(column: pd.Series, lines: np.ndarray, path: Path, ours: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) of a column of CSV text: "nan" and "inf" are numbers, an empty
    cell is a missing value."""
    text = column.str.strip()
    lower = text.str.lower()
    has = ~lower.isin(_MISSING).to_numpy()
    values = pd.to_numeric(text.where(has, "nan"), errors="coerce").to_numpy(dtype=float)
    wrong = has & np.isnan(values) & ~lower.isin(("nan", "+nan", "-nan")).to_numpy()
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise ConfigError(f"{path}: line {int(lines[i])}: {ours} is {column.iloc[i]!r}, not a "
                          f"number (nan and inf are allowed).")
    return values, has


def _json_numbers(raw: list[Any], lines: np.ndarray, path: Path, ours: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(values, present) of the values of one key of JSON objects (null: missing; a number
    in a string is a number, `true`/`false` are 1 and 0)."""
    cells = np.asarray(raw, dtype=object)
    try:  # numpy converts numbers, numeric strings and null (NaN) in C
        values = cells.astype(float)
    except (TypeError, ValueError):
        pass  # text that is not a number, or "" / "none": one at a time, to name it
    else:
        # numpy's stubs reject None, which an object array compares with element by element.
        return values, np.not_equal(cells, None).astype(bool)  # type: ignore[call-overload]
    values, has = np.full(len(raw), np.nan), np.zeros(len(raw), bool)
    for i, value in enumerate(raw):
        try:
            number_ = number(value)
        except (ValueError, OverflowError):
            raise ConfigError(f"{path}: line {int(lines[i])}: {ours} is {value!r}, not a "
                              f"number (nan and inf are allowed).") from None
        if number_ is not None:
            values[i], has[i] = number_, True
    return values, has


def _per_step(records: list[dict[str, float]]) -> bool:
    """Several training records an epoch (a per-step log, fractional epochs)."""
    epochs = [r["epoch"] for r in records if "epoch" in r and "train_loss" in r]
    return len(epochs) > len(set(epochs)) or any(not float(e).is_integer() for e in epochs)
