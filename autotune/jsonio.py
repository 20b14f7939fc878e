"""JSON for run files: NaN-safe writing and JSON Lines that survive a kill.

JSON has no NaN or Infinity: `jsonable` writes them as the strings `"nan"`, `"inf"` and
`"-inf"`, which `as_float` (and Python's `float`) read back. A JSON Lines file whose
process was killed mid-write ends in a torn line, which `read_jsonl` skips.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from trainer.userfiles import LOG_LIMIT, read_text

__all__ = ["append_jsonl", "as_float", "dumps_jsonl", "jsonable", "read_jsonl"]


def jsonable(value: Any) -> Any:
    """`value` for JSON: non-finite floats become strings, tuples lists, keys strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def as_float(value: Any) -> float:
    """A stored number as a float ('nan' and 'inf' strings included; None is NaN)."""
    return float(value) if value is not None else math.nan


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON Lines file ([] when it does not exist); torn lines skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in read_text(path, "run file", LOG_LIMIT).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        if isinstance(record, dict):
            records.append(record)
    return records


def dumps_jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    """Records as JSON Lines text."""
    return "".join(json.dumps(jsonable(r)) + "\n" for r in records)


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one record and fsync, so that a kill right after loses nothing written.

    After a torn last line (a kill mid-write) the record starts on a line of its own, so
    that the torn line, not the record, is what a reader skips."""
    line = json.dumps(jsonable(record)) + "\n"
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())


