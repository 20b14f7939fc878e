"""`diagnose --follow`: judge a log while another process writes it.

A trainer that appends to a CSV, JSON Lines or text log is read where it left off: only
the complete lines added since the last look (a line still being written waits for its
newline), pooled in bounded memory as any log is (`readers.pool`). Other formats (a
`trainer_state.json` rewritten at each save, TensorBoard event files, a Lightning
`metrics.csv` whose rows are merged by step) are read again whenever they change; a run
directory of ours is followed through its `metrics.jsonl`. After
each growth the records so far are judged as `diagnose` judges a whole log, and every
finding of warning or error severity is reported once (by its code), with the epoch or step
it concerns, the moment it first appears.

`follow` returns when the target has not grown for `idle` seconds (`Outcome.IDLE`), or at
the first finding of the `fail_on` severity (`Outcome.FAILED`: exit 3). It never prints:
the caller's `report` renders each finding.
"""

from __future__ import annotations

import enum
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autotune.diagnose.findings import Finding, FindingCode, Severity
from autotune.diagnose.readers import read_log, separator
from autotune.diagnose.readers.columns import Log
from autotune.diagnose.readers.keras import is_keras
from autotune.diagnose.readers.lightning import is_lightning
from autotune.diagnose.readers.rundir import is_run_dir
from autotune.diagnose.readers.table import Remap, Table, csv_rows
from autotune.diagnose.readers.tabular import json_lines
from autotune.diagnose.readers.text import TextLines
from autotune.diagnose.target import judge_log
from autotune.errors import ConfigError
from autotune.recovery.rundir import METRICS

__all__ = ["FAIL_ON", "Outcome", "Result", "follow", "position"]

FAIL_ON = ("error", "warning")
_SEVERITIES = {"error": (Severity.ERROR,), "warning": (Severity.ERROR, Severity.WARNING)}


class Outcome(str, enum.Enum):
    IDLE = "idle"  # no growth for `idle` seconds: exit 0
    FAILED = "failed"  # a finding of the --fail-on severity: exit 3


@dataclass
class Result:
    outcome: Outcome
    rows: int = 0
    reported: list[Finding] = field(default_factory=list)


def position(found: Finding) -> dict[str, float]:
    """The epoch and step a finding concerns (where the trouble began), from its evidence."""
    ev = found.evidence
    for epoch_key, step_key in (("epoch", "step"), ("began_epoch", "began_step"),
                                ("start_epoch", None), ("best_epoch", None)):
        epoch = ev.get(epoch_key)
        if isinstance(epoch, (int, float)):
            step = ev.get(step_key) if step_key else None
            return {"epoch": epoch, **({"step": step} if isinstance(step, (int, float))
                                       else {})}
    return {}


def follow(path: Path, flags: Mapping[str, object], *, classes: int | None = None,
           columns: Mapping[str, str] | None = None, idle: float = 300.0,
           fail_on: str | None = None, report: Callable[[Finding], None] = lambda f: None,
           poll: float | None = None, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> Result:
    """Judge `path` as it grows (see the module docstring).

    Args:
        flags: the intended schedule, as `diagnose_target`'s (learning_rate, warmup_epochs,
            schedule, epochs).
        idle: return after this many seconds without growth.
        fail_on: `error` or `warning`: return at the first finding of that severity (or
            worse); None: only at idle.
        report: called once with each new finding of warning or error severity.
        poll: seconds between looks (default: a quarter of `idle`, at most 1).
    """
    if not idle > 0:
        raise ConfigError(f"--idle must be positive but got {idle:g}.")
    if fail_on is not None and fail_on not in FAIL_ON:
        raise ConfigError(f"--fail-on must be one of {', '.join(FAIL_ON)} but got {fail_on!r}.")
    interval = min(idle / 4, 1.0) if poll is None else poll
    path = Path(path)
    if path.is_dir() and is_run_dir(path):
        path = path / METRICS  # a run directory of ours: its metrics as they come
    reader = _Reader(path, dict(columns or {}))
    seen: set[FindingCode] = set()
    result = Result(Outcome.IDLE)
    last_growth = clock()
    while True:
        if reader.grow():
            last_growth = clock()
            log = reader.log()
            if log is not None and log.records:
                result.rows = log.rows or len(log.records)
                for found in judge_log(log, flags, classes):
                    if found.severity is Severity.INFO or found.code in seen:
                        continue
                    seen.add(found.code)
                    result.reported.append(found)
                    report(found)
                    if fail_on is not None and found.severity in _SEVERITIES[fail_on]:
                        result.outcome = Outcome.FAILED
                        return result
        elif clock() - last_growth >= idle:
            if not reader.started:
                raise ConfigError(f"{path} did not appear within --idle {idle:g} seconds.")
            if reader.log() is None and reader.error is not None:
                raise reader.error
            return result
        sleep(interval)


class _Reader:
    """The target read where it left off (appendable formats) or again when it changed."""

    def __init__(self, path: Path, columns: dict[str, str]) -> None:
        self.path, self.columns = path, columns
        self.started = False
        self.error: ConfigError | None = None  # why nothing could be read yet
        self._reset([])

    def _reset(self, names: list[str]) -> None:
        self._offset = 0
        self._pending = b""
        self._kind: str | None = None  # "csv", "jsonl", "text" or "whole"
        self._table: Table | None = None
        self._text: TextLines | None = None
        self._line = 1
        self._names = names
        self._stamp: tuple[float, int] | None = None
        self._whole: Log | None = None
        self._sep = ","

    def grow(self) -> bool:
        """Read what was added; True when complete new lines (or a new version) came."""
        if not self.path.exists():
            return False
        self.started = True
        if self.path.is_dir() or self._kind == "whole":
            return self._reread()
        size = self.path.stat().st_size
        if size < self._offset:  # truncated or replaced: start again
            self._reset([])
        if size == self._offset:
            return False
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = self._pending + f.read(size - self._offset)
        self._offset = size
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        if cut == 0:
            return False
        try:
            text = data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path} cannot be read: it is not UTF-8 text.") from None
        lines = text.splitlines(keepends=True)
        try:
            return self._feed(lines)
        except Remap as remap:  # a column first seen now: read it all again, knowing it
            self._reset(remap.names)
            return self.grow()

    def _feed(self, lines: list[str]) -> bool:
        if self._kind is None:
            self._kind = self._sniff(lines)
            if self._kind == "whole":
                return self._reread()
        first, self._line = self._line, self._line + len(lines)
        if self._kind == "jsonl":
            rows = json_lines(lines, first, self.path, last=False)
            if self._table is None:
                try:
                    self._table = Table.for_json(self.path, [r for _, r in rows],
                                                 self.columns, self._names)
                except ConfigError as exc:  # no loss in these lines yet: wait for one
                    self.error = exc
                    return False
            self._table.add_json_rows(rows)
        elif self._kind in ("csv", "keras"):
            if self._table is None:
                self._table = Table.for_csv(self.path, lines[0], self.columns, self._sep,
                                            self._kind)
                lines, first = lines[1:], first + 1
            self._table.add_csv(lines, first)
        else:
            if self._text is None:
                self._text = TextLines(self.path, self.columns, self._names)
            self._text.add(lines)
        return True

    def _sniff(self, lines: list[str]) -> str:
        head = "".join(lines[:50])
        stripped = head.lstrip()
        if stripped.startswith("["):
            return "whole"
        if stripped.startswith("{"):
            try:
                first = json.loads(stripped.split("\n", 1)[0])
            except json.JSONDecodeError:
                return "whole"  # one JSON document over many lines (trainer_state.json)
            return "whole" if isinstance(first, dict) and "log_history" in first else "jsonl"
        sep = separator(head)
        if sep is not None:
            header = [h.strip() for h in csv_rows(lines[0], self.path, sep)[1]]
            if is_lightning(header):
                return "whole"
            self._sep = sep
            return "keras" if is_keras(header) else "csv"
        return "text"

    def _reread(self) -> bool:
        target = self.path
        files = [p for p in target.rglob("*") if p.is_file()] if target.is_dir() else [target]
        stamp = (max((p.stat().st_mtime for p in files), default=0.0),
                 sum(p.stat().st_size for p in files))
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        self._kind = "whole"
        try:
            self._whole = read_log(target, self.columns)
        except ConfigError as exc:  # half written, or not yet a log: look again later
            self.error = exc
            return False
        return True

    def log(self) -> Log | None:
        if self._kind == "whole":
            return self._whole
        if self._table is not None:
            return self._table.log()
        if self._text is not None and self._text.table is not None:
            return self._text.log()
        return None
