"""TrainConfig: the flat training configuration, its validation, YAML I/O and profiles."""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import ConfigError, excerpt, quote_path
from trainer.userfiles import load_yaml_file, load_yaml_text

SCHEDULES = ("cosine", "linear", "constant")
MODEL_SIZES = ("tiny", "default", "large")
PROFILES = ("tiny", "default", "large")
# torch.compile's modes; "reduce-overhead" and "max-autotune" replay CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _doc(text: str, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {"doc": text, "low": low, "high": high, "low_open": low_open, "choices": choices}


@dataclass
class TrainConfig:
    """Everything a run needs to be reproduced; the keys users write in YAML and `--set`."""

    learning_rate: float = field(default=1e-3, metadata=_doc(
        "peak learning rate after warmup", low=0.0, high=100.0, low_open=True))
    warmup_epochs: float = field(default=1.0, metadata=_doc(
        "linear warmup length in epochs (fractional allowed); 0 = none", low=0.0, high=1e4))
    schedule: str = field(default="cosine", metadata=_doc(
        "decay after warmup", choices=SCHEDULES))
    min_lr_ratio: float = field(default=0.05, metadata=_doc(
        "floor of the decay, as a fraction of the peak learning rate", low=0.0, high=1.0))
    epochs: int = field(default=8, metadata=_doc("planned epochs", low=1, high=100000))
    batch_size: int = field(default=32, metadata=_doc("pairs per batch", low=1, high=65536))
    weight_decay: float = field(default=0.01, metadata=_doc("AdamW weight decay", low=0.0,
                                                            high=10.0))
    grad_clip: float = field(default=1.0, metadata=_doc(
        "gradient-norm clipping threshold; 0 = off", low=0.0, high=1e6))
    seed: int = field(default=0, metadata=_doc("seed of everything random", low=0,
                                               high=2**31 - 1))
    label_smoothing: float = field(default=0.0, metadata=_doc(
        "label smoothing of the training loss; 0.0 = off", low=0.0, high=0.99))
    use_augmentation: bool = field(default=True, metadata=_doc(
        "dihedral and colour-permutation augmentation on/off"))
    data: str = field(default="arcagi", metadata=_doc(
        "arcagi, arcagi2, or a path: a folder of task JSON files, one task JSON file, or a "
        "challenges JSON with its solutions file beside it"))
    model: str = field(default="tiny", metadata=_doc("model size", choices=MODEL_SIZES))
    max_tasks: int = field(default=0, metadata=_doc(
        "use at most this many tasks of each split (first by id); 0 = all", low=0, high=100000))
    max_grid: int = field(default=30, metadata=_doc(
        "drop pairs whose grids have a side longer than this", low=1, high=30))
    val_fraction: float = field(default=0.1, metadata=_doc(
        "fraction of training pairs held out for validation (fixed seed)", low=0.0,
        high=0.5, low_open=True))
    skip_batches: list[int] = field(default_factory=list, metadata=_doc(
        "optimizer steps whose batch is skipped (set by recovery after a loss spike)"))
    compile: bool = field(default=False, metadata=_doc("torch.compile the model (CUDA only)"))
    compile_mode: str = field(default="default", metadata=_doc(
        "torch.compile's mode when compile is true: default, reduce-overhead (CUDA graphs), "
        "max-autotune or max-autotune-no-cudagraphs", choices=COMPILE_MODES))

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping written to YAML."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with `changes` applied."""
        return from_dict({**self.to_dict(), **changes})


KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _type_name(tp: Any) -> str:
    return {"float": "a number", "int": "an integer", "bool": "true or false",
            "str": "a string", "list[int]": "a list of integers"}.get(str(tp), str(tp))


def _coerce(key: str, value: Any) -> Any:
    """Check (and where harmless, convert) one value to the field's type."""
    tp = str(_FIELDS[key].type)
    if tp == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number but got {excerpt(value)}.")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number but got {excerpt(value)}.")
        return value
    if tp == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer but got {excerpt(value)}.")
        return value
    if tp == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false but got {excerpt(value)}.")
        return value
    if tp == "list[int]":
        if not isinstance(value, list) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise ConfigError(f"{key} must be a list of step numbers >= 0 but got "
                              f"{excerpt(value)}.")
        return sorted(set(value))
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string but got {excerpt(value)}.")
    return value


def validate(config: TrainConfig) -> None:
    """Raise ConfigError naming the first key whose value is of the wrong type or range."""
    for name, f in _FIELDS.items():
        value = _coerce(name, getattr(config, name))
        object.__setattr__(config, name, value)
        meta = f.metadata
        if meta["choices"] is not None and value not in meta["choices"]:
            allowed = ", ".join(meta["choices"])
            raise ConfigError(f"{name} must be one of {allowed} but got {excerpt(value)}.")
        low, high = meta["low"], meta["high"]
        if low is None or isinstance(value, (bool, list, str)):
            continue
        too_low = value <= low if meta["low_open"] else value < low
        if too_low or value > high:
            lo = f"> {low:g}" if meta["low_open"] else f">= {low:g}"
            raise ConfigError(f"{name} must be {lo} and <= {high:g} but got {excerpt(value)}.")
    if config.compile_mode != "default" and not config.compile:
        raise ConfigError(f"compile_mode {excerpt(config.compile_mode)} takes effect only with "
                          f"compile: true; set compile=true too, or leave compile_mode "
                          f"default.")


def check_keys(keys: Any, also: tuple[str, ...] = ()) -> None:
    """Raise ConfigError for an unknown key, naming the closest known one.

    `also` names keys that the caller reads itself (a run's other settings), beside the
    TrainConfig keys.
    """
    known = KEYS + tuple(k for k in also if k not in _FIELDS)
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f" Did you mean {excerpt(close[0])}?" if close else ""
        raise ConfigError(f"unknown configuration key {excerpt(key)}.{hint} "
                          f"Known keys: {', '.join(known)}.")


def from_dict(mapping: dict[str, Any]) -> TrainConfig:
    """A validated TrainConfig from a flat mapping (unknown keys are an error)."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"a configuration must be a mapping of keys to values but got "
                          f"{type(mapping).__name__}.")
    check_keys(mapping)
    return TrainConfig(**mapping)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (`trainer.userfiles`: a bounded read of a regular file,
    safe tags, no aliases, no duplicate keys; an empty file is an empty mapping)."""
    loaded = load_yaml_file(path, "config file")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {quote_path(path)} must hold a mapping of keys to "
                          f"values.")
    return loaded


def parse_set(items: list[str], also: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parse `--set KEY=VALUE` items; values are read as YAML scalars (1e-3, true, cosine).
    Keys are TrainConfig's or those in `also`."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE but got {excerpt(item)}.")
        check_keys([key], also)
        try:
            value = load_yaml_text(raw) if raw.strip() else raw
        except (yaml.YAMLError, RecursionError):
            value = raw
        # YAML 1.1 reads "1e-3" as a string; numbers that Python reads are numbers.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        out[key] = value
    return out


# What a profile sets; anything the user sets wins over it.
PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    # A few seconds an epoch on two CPU cores: small model, a subset of tasks, small grids.
    "tiny": {"model": "tiny", "max_tasks": 150, "max_grid": 10, "epochs": 8,
             "batch_size": 32, "learning_rate": 2e-3, "warmup_epochs": 1.0},
    # The real ARC-AGI-1 run for one GPU.
    "default": {"model": "default", "max_tasks": 0, "max_grid": 30, "epochs": 40,
                "batch_size": 64, "learning_rate": 5e-4, "warmup_epochs": 2.0},
    "large": {"model": "large", "max_tasks": 0, "max_grid": 30, "epochs": 60,
              "batch_size": 64, "learning_rate": 3e-4, "warmup_epochs": 3.0},
}


def resolve(profile: str, file_values: dict[str, Any] | None = None,
            set_values: dict[str, Any] | None = None) -> TrainConfig:
    """Profile defaults, then the config file, then `--set` values (last wins)."""
    if profile not in PROFILE_SETTINGS:
        raise ConfigError(f"--profile must be one of {', '.join(PROFILES)} but got "
                          f"{excerpt(profile)}.")
    merged: dict[str, Any] = dict(PROFILE_SETTINGS[profile])
    for values in (file_values or {}, set_values or {}):
        check_keys(values)
        merged.update(values)
    return from_dict(merged)
