"""A run directory: config, effective config, metrics and events logs, checkpoints.

Metrics and events are JSON Lines appended as they happen; a torn last line (the process
killed mid-write) is ignored when read back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.atomic import atomic_write_text
from trainer.config import TrainConfig, from_dict, load_yaml, save_yaml
from trainer.errors import ConfigError

CONFIG = "config.yaml"
EFFECTIVE = "effective_config.yaml"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


def jsonable(value: Any) -> Any:
    """`value` for JSON, which has no NaN or Infinity: those become strings that Python's
    float() reads back."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a kill
    return records


def as_float(value: Any) -> float:
    """A metrics value as a float ('nan' and 'inf' strings included)."""
    return float(value) if value is not None else math.nan


@dataclass(frozen=True)
class RunDir:
    """Paths and I/O of one run directory."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @classmethod
    def create(cls, path: Path, config: TrainConfig) -> RunDir:
        """Start a new run in `path` (an existing run there is an error: resume it)."""
        run = cls(Path(path))
        if (run.path / CONFIG).exists():
            raise ConfigError(f"run directory {str(run.path)!r} already holds a run; "
                              f"use `autotune resume {run.path}` or another --run-dir.")
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"--run-dir {str(run.path)!r} is a file, not a directory.")
        try:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--run-dir {str(run.path)!r} cannot be created: "
                              f"{exc.strerror}.") from None
        save_yaml(config, run.path / CONFIG, "configuration this run started with")
        (run.path / EVENTS).touch()
        run.write_effective(config)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run (exit 2 with one line if `path` is not one)."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise ConfigError(f"run directory {str(run.path)!r} does not exist.")
        if not (run.path / CONFIG).is_file():
            raise ConfigError(f"{str(run.path)!r} is not a run directory (no {CONFIG}); "
                              f"give a folder written by `autotune train`.")
        return run

    def config(self) -> TrainConfig:
        return from_dict(load_yaml(self.path / CONFIG))

    def effective_config(self) -> TrainConfig:
        path = self.path / EFFECTIVE
        return from_dict(load_yaml(path)) if path.exists() else self.config()

    def write_effective(self, config: TrainConfig) -> None:
        save_yaml(config, self.path / EFFECTIVE,
                  "configuration in force now (after any recovery); "
                  "`autotune train --config` accepts it")

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(jsonable(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_metrics(self, record: dict[str, Any]) -> None:
        self._append(METRICS, record)

    def append_event(self, event: dict[str, Any]) -> None:
        self._append(EVENTS, event)

    def metrics(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / METRICS)

    def events(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / EVENTS)

    def truncate_metrics(self, global_epoch: int) -> None:
        """Drop metrics of compute after `global_epoch` (lost with a killed process)."""
        keep = [r for r in self.metrics() if int(r["global_epoch"]) <= global_epoch]
        atomic_write_text(self.path / METRICS,
                          "".join(json.dumps(jsonable(r)) + "\n" for r in keep))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(jsonable(summary), indent=2))

    def summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None
