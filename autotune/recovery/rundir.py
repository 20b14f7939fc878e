"""A run directory: config, effective config, metrics and events logs, summary, checkpoints.

Configurations are flat mappings (an ARC run's TrainConfig keys with the supervisor's, or
a user's trainer's `hparams`). Metrics and events are JSON Lines appended as they happen,
each line fsynced; a torn last line (the process killed mid-write) is ignored when read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.atomic import atomic_write_text
from autotune.errors import ConfigError
from autotune.events import Event
from autotune.jsonio import append_jsonl, dumps_jsonl, jsonable, read_jsonl
from trainer.config import load_yaml

__all__ = ["CHECKPOINTS", "CONFIG", "EFFECTIVE", "EVENTS", "METRICS", "SUMMARY", "RunDir"]

CONFIG = "config.yaml"
EFFECTIVE = "effective_config.yaml"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


def write_yaml(mapping: Mapping[str, Any], path: Path, header: str = "") -> None:
    """A bare YAML mapping, written atomically, with comment lines first."""
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(Path(path), comments + yaml.safe_dump(jsonable(dict(mapping)),
                                                            sort_keys=False))


@dataclass(frozen=True)
class RunDir:
    """Paths and I/O of one run directory."""

    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def exists(self) -> bool:
        """Whether a run was started here (its config.yaml is written)."""
        return (self.path / CONFIG).is_file()

    @classmethod
    def create(cls, path: Path, config: Mapping[str, Any]) -> RunDir:
        """Start a new run in `path` (an existing run there is an error: resume it)."""
        run = cls(Path(path))
        if run.exists():
            raise ConfigError(f"run directory {str(run.path)!r} already holds a run; "
                              f"resume it or give another run directory.")
        if run.path.exists() and not run.path.is_dir():
            raise ConfigError(f"run directory {str(run.path)!r} is a file, not a directory.")
        try:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run directory {str(run.path)!r} cannot be created: "
                              f"{exc.strerror}.") from None
        write_yaml(config, run.path / CONFIG, "configuration this run started with")
        (run.path / EVENTS).touch()
        run.write_effective(config)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run (ConfigError with one line if `path` is not one)."""
        run = cls(Path(path))
        if not run.path.is_dir():
            raise ConfigError(f"run directory {str(run.path)!r} does not exist.")
        if not run.exists():
            raise ConfigError(f"{str(run.path)!r} is not a run directory (no {CONFIG}).")
        return run

    def config(self) -> dict[str, Any]:
        return load_yaml(self.path / CONFIG)

    def effective_config(self) -> dict[str, Any]:
        path = self.path / EFFECTIVE
        return load_yaml(path) if path.exists() else self.config()

    def write_effective(self, config: Mapping[str, Any]) -> None:
        write_yaml(config, self.path / EFFECTIVE,
                   "configuration in force now (after any recovery); "
                   "`autotune train --config` accepts it")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        append_jsonl(self.path / METRICS, record)

    def append_event(self, event: Event) -> None:
        append_jsonl(self.path / EVENTS, event.to_dict())

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS)

    def events(self) -> list[Event]:
        return [Event.from_dict(r) for r in read_jsonl(self.path / EVENTS)]

    def truncate_metrics(self, global_epoch: int) -> None:
        """Drop metrics of compute after `global_epoch` (lost with a killed process)."""
        keep = [r for r in self.metrics() if int(r["global_epoch"]) <= global_epoch]
        atomic_write_text(self.path / METRICS, dumps_jsonl(keep))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(jsonable(summary), indent=2))

    def summary(self) -> dict[str, Any] | None:
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None
