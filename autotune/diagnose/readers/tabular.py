"""Our CSV and JSON Lines logs (and a JSON array of records): one record per row.

Columns `epoch` (or `step`) and a loss are needed; `lr`, `val_loss`, `grad_norm` and
`step` are used when present. "nan" and "inf" are numbers; an empty cell is a missing
value. Rows of one epoch that hold different columns (a training row and a validation
row) are merged. A file is read in blocks of lines into a `table.Table` (bounded memory,
vectorised), never whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from autotune.diagnose.readers.columns import Log
from autotune.diagnose.readers.table import Remap, Rows, Table, csv_rows
from autotune.errors import ConfigError
from trainer import userfiles

__all__ = ["Remap", "Table", "csv_rows", "json_lines", "json_rows", "opened", "read_block",
           "read_csv", "read_jsonl", "read_text"]

log = logging.getLogger(__name__)


def read_text(path: Path) -> str:
    """A log's whole text (small logs and JSON files): a regular file, at most
    `trainer.userfiles.LOG_LIMIT` bytes, UTF-8; long logs are read in blocks (`opened`)."""
    try:
        return userfiles.read_bytes(path, "training log", userfiles.LOG_LIMIT).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} cannot be read: it is not UTF-8 text (a training log must "
                          f"be CSV, JSON, a text log or a TensorBoard event file).") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}.") from None


def json_rows(text: str, path: Path) -> Rows:
    """(line number, object) of JSON Lines, or of a JSON array of objects."""
    if text.lstrip().startswith("["):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}."
                              ) from None
        if not all(isinstance(row, dict) for row in loaded):
            raise ConfigError(f"{path} must be a list of JSON objects, one per record.")
        return [(i + 1, row) for i, row in enumerate(loaded)]
    return json_lines(text.splitlines(), 1, path, last=True)


BLOCK_BYTES = 8 << 20
"""A long log is read and pooled in blocks of about this many bytes of lines."""


def read_csv(path: Path, given: Mapping[str, str], sep: str = ",", fmt: str = "csv") -> Log:
    """A CSV file (our columns, or a Keras CSVLogger file), read in blocks of lines."""
    with opened(path) as f:
        header = f.readline()
        table = Table.for_csv(path, header, given, sep, fmt)
        line = 2
        while lines := read_block(f, path):
            table.add_csv(lines, line)
            line += len(lines)
    return table.log()


def read_jsonl(path: Path, given: Mapping[str, str]) -> Log:
    """JSON Lines (or a JSON array of records), read in blocks of lines."""
    names: list[str] = []
    while True:
        try:
            return _read_jsonl(path, given, names)
        except Remap as remap:  # a column first seen late: read again, knowing it
            names = remap.names


def _read_jsonl(path: Path, given: Mapping[str, str], names: list[str]) -> Log:
    with opened(path) as f:
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        if head == "[":
            rows = json_rows(head + f.read(), path)
            whole = Table.for_json(path, [r for _, r in rows], given)
            whole.add_json_rows(rows)
            return whole.log()
        f.seek(0)
        table: Table | None = None
        line = 1
        blocks = iter(lambda: read_block(f, path), [])
        block = next(blocks, None)
        while block is not None:
            following = next(blocks, None)
            rows = json_lines(block, line, path, last=following is None)
            line += len(block)
            if table is None:
                table = Table.for_json(path, [r for _, r in rows], given, names)
            table.add_json_rows(rows)
            block = following
    if table is None:
        raise ConfigError(f"{path} is empty: a training log needs a loss and an epoch or "
                          f"step on each record.")
    return table.log()


def opened(path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8", newline="")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}.") from None


def read_block(f: TextIO, path: Path) -> list[str]:
    try:
        return f.readlines(BLOCK_BYTES)
    except UnicodeDecodeError:
        raise ConfigError(f"{path} cannot be read: it is not UTF-8 text (a training log must "
                          f"be CSV, JSON, a text log or a TensorBoard event file).") from None


def json_lines(lines: list[str], first: int, path: Path, *, last: bool) -> Rows:
    """(line number, object) of a block of JSON Lines starting at line `first`; with
    `last`, a torn last line (a writer killed mid-line) is skipped."""
    rows: Rows = []
    filled = [(first + i, line) for i, line in enumerate(lines) if line.strip()]
    try:  # one parse of the whole block is twice as fast as one a line
        loaded = json.loads("[" + ",".join(line for _, line in filled) + "]")
    except (json.JSONDecodeError, RecursionError):
        loaded = None
    if loaded is not None and all(isinstance(row, dict) for row in loaded):
        return [(n, row) for (n, _), row in zip(filled, loaded)]
    for n, line in filled:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if last and n == filled[-1][0] and (rows or first > 1):
                log.warning("%s: skipping the unfinished last line %d", path, n)
                continue
            raise ConfigError(f"{path}: line {n} is not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {n} is not a JSON object.")
        rows.append((n, row))
    return rows


