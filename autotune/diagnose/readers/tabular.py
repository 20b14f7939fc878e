"""Our CSV and JSON Lines logs (and a JSON array of records): one record per row.

Columns `epoch` (or `step`) and a loss are needed; `lr`, `val_loss`, `grad_norm` and
`step` are used when present. "nan" and "inf" are numbers; an empty cell is a missing
value. Rows of one epoch that hold different columns (a training row and a validation
row) are merged.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.diagnose.readers.columns import Log, merge_rows, records_of
from trainer.errors import ConfigError

__all__ = ["csv_rows", "json_rows", "read_csv", "read_jsonl", "read_text"]

log = logging.getLogger(__name__)

Rows = list[tuple[int, dict[str, Any]]]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} cannot be read: it is not UTF-8 text (a training log must "
                          f"be CSV, JSON, a text log or a TensorBoard event file).") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}.") from None


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
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows: Rows = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == lines[-1][0] and rows:
                # A process killed while appending leaves half a last line: skip it.
                log.warning("%s: skipping the unfinished last line %d", path, n)
                continue
            raise ConfigError(f"{path}: line {n} is not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {n} is not a JSON object.")
        rows.append((n, row))
    return rows


def read_csv(path: Path, text: str, given: Mapping[str, str], sep: str = ",",
             fmt: str = "csv") -> Log:
    rows, header = csv_rows(text, path, sep)
    return _log(path, rows, given, fmt, header)


def read_jsonl(path: Path, text: str, given: Mapping[str, str]) -> Log:
    return _log(path, json_rows(text, path), given, "jsonl", None)


def _log(path: Path, rows: Rows, given: Mapping[str, str], fmt: str,
         header: list[str] | None) -> Log:
    records, mapping, lines = records_of(rows, path, given, names=header)
    key = "epoch" if "epoch" in mapping else "step"
    raw_rows = dict(rows)
    for line, record in zip(lines, records):
        value = record.get(key)
        if value is None or not math.isfinite(value):
            raise ConfigError(f"{path}: line {line} has no finite {key} (got "
                              f"{raw_rows[line].get(mapping[key])!r}); every record needs one.")
    merged = merge_rows(records, key)
    return Log(path, fmt, merged, mapping, per_step=_per_step(merged),
               unit="epoch" if key == "epoch" else "step")


def _per_step(records: list[dict[str, float]]) -> bool:
    """Several training records an epoch (a per-step log, fractional epochs)."""
    epochs = [r["epoch"] for r in records if "epoch" in r and "train_loss" in r]
    return len(epochs) > len(set(epochs)) or any(not float(e).is_integer() for e in epochs)
