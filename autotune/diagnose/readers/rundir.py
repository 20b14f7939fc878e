"""Our run directories: config.yaml, metrics.jsonl and events.jsonl.

A run directory is written by `autotune train` (an ARC run: its config.yaml is a full
TrainConfig beside the supervisor's settings) or by `autotune.supervise` for any trainer
(its config.yaml holds that trainer's hyperparameters, whatever their names). Only an ARC
run's configuration is validated as a TrainConfig; any other is read as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autotune.diagnose.readers.columns import records_of, require
from autotune.diagnose.readers.tabular import json_rows, read_text
from autotune.errors import ConfigError
from autotune.jsonio import read_jsonl
from autotune.recovery.rundir import CONFIG, EVENTS, METRICS
from autotune.recovery.settings import SUPERVISOR_KEYS
from trainer.config import TrainConfig, check_keys
from trainer.userfiles import load_yaml_text, yaml_error

__all__ = ["ARC_CONFIG_KEYS", "ARC_METRIC_KEYS", "RunRecord", "is_run_dir", "read_run"]

ARC_CONFIG_KEYS = ("data", "model")  # keys only an ARC run's configuration has
ARC_METRIC_KEYS = ("marginal_loss", "val_cell_acc", "val_exact")  # our ARC trainer's metrics


@dataclass(frozen=True)
class RunRecord:
    """What a run directory holds: the starting configuration, the metrics, the events."""

    path: Path
    config: dict[str, Any]
    """config.yaml as written (the trainer's hyperparameters and the supervisor's settings)."""
    history: list[dict[str, float]]
    events: list[dict[str, Any]]
    steps_per_epoch: int | None
    arc: bool
    """Written by `autotune train` for our ARC trainer."""
    train_config: TrainConfig | None
    """The validated TrainConfig of an ARC run; None for any other trainer."""


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG).is_file() and (path / METRICS).is_file()


def read_run(run_dir: Path) -> RunRecord:
    """The config.yaml, metrics.jsonl and events.jsonl of a run directory."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / CONFIG, run_dir / METRICS
    missing = [p.name for p in (config_path, metrics_path) if not p.is_file()]
    if not run_dir.is_dir() or missing:
        what = "it is not a folder" if not run_dir.is_dir() else "it has no " + " and no ".join(
            missing)
        raise ConfigError(f"{run_dir} is not a run directory: {what} (give a folder written "
                          f"by `autotune train` or `autotune.supervise`, or a training log).")
    config = _load_config(config_path)
    rows = json_rows(read_text(metrics_path), metrics_path)
    records, mapping, _ = records_of(rows, metrics_path, {}, keep_other=True)
    if not records:
        raise ConfigError(f"{metrics_path} has no records yet: the run has not finished an "
                          f"epoch.")
    require(mapping, list(mapping.values()), metrics_path)
    arc = any(k in config for k in ARC_CONFIG_KEYS) or any(
        k in r for r in records for k in ARC_METRIC_KEYS)
    train_config = _train_config(config, config_path) if arc else None
    events = read_jsonl(run_dir / EVENTS)
    return RunRecord(run_dir, config, records, events, _steps_per_epoch(records), arc,
                     train_config)


def _load_config(path: Path) -> dict[str, Any]:
    try:
        loaded = load_yaml_text(read_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {yaml_error(exc)}.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values.")
    return {str(k): v for k, v in loaded.items()}


def _train_config(config: Mapping[str, Any], path: Path) -> TrainConfig:
    """An ARC run's TrainConfig; the supervisor's settings beside it are not its keys."""
    try:
        check_keys(config, also=tuple(SUPERVISOR_KEYS))
        fields = TrainConfig.__dataclass_fields__
        return TrainConfig(**{k: v for k, v in config.items() if k in fields})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _steps_per_epoch(records: Sequence[Mapping[str, float]]) -> int | None:
    """Recorded `steps_per_epoch`, else step / global_epoch of the first record."""
    for record in records:
        recorded = record.get("steps_per_epoch")
        if recorded is not None and math.isfinite(recorded) and recorded >= 1:
            return int(round(recorded))
    first = records[0]
    step, epochs = first.get("step"), first.get("global_epoch")
    if step is None or epochs is None or not epochs > 0 or not step > 0:
        return None
    return max(int(round(step / epochs)), 1)
