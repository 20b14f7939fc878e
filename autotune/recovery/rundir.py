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
from autotune.errors import ConfigError, excerpt, quote_path
from autotune.events import Event, EventKind
from autotune.jsonio import append_jsonl, dumps_jsonl, jsonable, read_jsonl
from trainer.config import load_yaml
from trainer.userfiles import LOG_LIMIT, read_bytes

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

    def foreign_files(self) -> list[str]:
        """The files of a run in a folder that is not one (no config.yaml): what `create`
        refuses to mix a new run with."""
        if self.exists() or not self.path.is_dir():
            return []
        found = [name for name in (EFFECTIVE, METRICS, EVENTS, SUMMARY)
                 if (self.path / name).exists()]
        if self.checkpoints.is_dir() and any(self.checkpoints.iterdir()):
            found.append(CHECKPOINTS + "/")
        return found

    def check_new(self) -> None:
        """ConfigError unless a new run may start here: nothing of a run in the way."""
        if self.exists():
            raise ConfigError(f"run directory {quote_path(self.path)} already holds a run; "
                              f"resume it or give another run directory.")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run directory {quote_path(self.path)} is a file, not a "
                              f"directory.")
        foreign = self.foreign_files()
        if foreign:
            raise ConfigError(f"run directory {quote_path(self.path)} holds files of a run "
                              f"({', '.join(foreign)}) but no {CONFIG}, so it is not a run "
                              f"to continue; give an empty or new run directory.")

    @classmethod
    def create(cls, path: Path, config: Mapping[str, Any]) -> RunDir:
        """Start a new run in `path` (an existing run there is an error: resume it; so is a
        folder with another run's files but no config.yaml: never mixed in)."""
        run = cls(Path(path))
        run.check_new()
        try:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run directory {quote_path(run.path)} cannot be created: "
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
            raise ConfigError(f"run directory {quote_path(run.path)} does not exist.")
        if not run.exists():
            raise ConfigError(f"{quote_path(run.path)} is not a run directory (no {CONFIG}).")
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
        """The epochs' records; ConfigError naming the file for one without an integer
        `global_epoch` and `epoch` (damaged, or not written by autotune)."""
        path = self.path / METRICS
        records = read_jsonl(path)
        for n, record in enumerate(records, start=1):
            for key in ("global_epoch", "epoch"):
                value = record.get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                        isinstance(value, float) and not value.is_integer()):
                    raise ConfigError(f"{quote_path(path)}: record {n} has no integer "
                                      f"{key!s} (got {excerpt(value, 40)}); the file is "
                                      f"damaged or not autotune's.")
        return records

    def events(self) -> list[Event]:
        """The run's events; ConfigError naming the file for one that cannot be read (an
        unknown kind, a missing field)."""
        path = self.path / EVENTS
        out = []
        for n, record in enumerate(read_jsonl(path), start=1):
            try:
                out.append(Event.from_dict(record))
            except (KeyError, ValueError, TypeError, AttributeError):
                known = ", ".join(k.value for k in EventKind)
                raise ConfigError(f"{quote_path(path)}: event {n} cannot be read (kind "
                                  f"{excerpt(record.get('kind'), 40)}; known kinds: "
                                  f"{known}); the file is damaged or from a newer "
                                  f"autotune.") from None
        return out

    def truncate_metrics(self, global_epoch: int) -> None:
        """Drop metrics of compute after `global_epoch` (lost with a killed process)."""
        keep = [r for r in self.metrics() if int(r["global_epoch"]) <= global_epoch]
        atomic_write_text(self.path / METRICS, dumps_jsonl(keep))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / SUMMARY, json.dumps(jsonable(summary), indent=2))

    def summary(self) -> dict[str, Any] | None:
        """summary.json (None before the run ended); ConfigError naming it when damaged."""
        path = self.path / SUMMARY
        if not path.exists():
            return None
        try:
            loaded = json.loads(read_bytes(path, "summary", LOG_LIMIT))
        except ValueError:  # ConfigError is one too
            loaded = None
        if not isinstance(loaded, dict) or not isinstance(loaded.get("status"), str):
            raise ConfigError(f"{quote_path(path)} is damaged (not the JSON summary of a "
                              f"run); delete it and `autotune resume` the run to write it "
                              f"again.")
        return loaded
