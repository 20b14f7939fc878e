"""The search space: ranges and choices over TrainConfig keys, and fixed values.

A space is a flat YAML mapping. A key whose value is a mapping is searched:

    learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}   # a float range
    batch_size: {choices: [16, 32, 64]}                      # a choice
    warmup_epochs: {low: 0, high: 2, step: 0.5}              # a stepped range

A key whose value is anything else is fixed for every trial (`epochs: 6`). A range over an
integer key is sampled as an integer. Every bound and choice is checked against the
configuration's own rules before the study starts, so a bad space is exit 2 naming the key.

A free space (`free=True`: `autotune search --trainer`, whose keys are the user's
factory's) takes any key; a range whose bounds (and step) are integers is sampled as an
integer, any other as a float.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from autotune.errors import ConfigError, excerpt, quote_path
from trainer.config import KEYS, TrainConfig, check_keys, from_dict, load_yaml, resolve

__all__ = ["Choice", "Param", "Range", "Space", "load_space", "parse_space", "shipped",
           "space_path"]

DEFAULT_SPACE = "default"
RANGE_FIELDS = ("low", "high", "log", "step")
_TYPES = {f: str(TrainConfig.__dataclass_fields__[f].type) for f in KEYS}


class Suggester(Protocol):
    """The part of `optuna.Trial` a space samples with."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Range:
    """A numeric range; sampled as an integer when the key is an integer key."""

    key: str
    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial: Suggester) -> Any:
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-12 * abs(self.low) <= value <= self.high + 1e-12 * abs(self.high):
            return False
        if self.integer and float(value) != int(value):
            return False
        if self.step:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class Choice:
    """One of a few values."""

    key: str
    choices: tuple[Any, ...]

    def suggest(self, trial: Suggester) -> Any:
        return trial.suggest_categorical(self.key, list(self.choices))

    def contains(self, value: Any) -> bool:
        return any(_same(value, c) for c in self.choices)

    def to_yaml(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


Param = Range | Choice


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


@dataclass(frozen=True)
class Space:
    """Searched parameters and fixed values over TrainConfig keys."""

    params: tuple[Param, ...] = ()
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = "<space>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def param(self, key: str) -> Param | None:
        return next((p for p in self.params if p.key == key), None)

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """The sampled parameters of one trial (fixed values not included)."""
        return {p.key: p.suggest(trial) for p in self.params}

    def config(self, params: dict[str, Any], profile: str,
               overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The trial's configuration: profile, then fixed values, then `overrides` (flags such
        as --epochs), then the sampled parameters."""
        return resolve(profile, {**self.fixed, **(overrides or {})}, params)

    def project(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The space's parameters of `config`, or None when one of them lies outside."""
        values = {p.key: config.get(p.key) for p in self.params}
        if all(p.contains(values[p.key]) for p in self.params):
            return values
        return None

    def to_yaml(self) -> dict[str, Any]:
        """A mapping that `parse_space` reads back to the same space (stored with a study)."""
        return {**{p.key: p.to_yaml() for p in self.params}, **self.fixed}


def _number(key: str, name: str, value: Any, source: str) -> float:
    # YAML 1.1 reads "1e-4" (no dot) as a string; accept what Python reads as a number.
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        raise ConfigError(f"space {source}: {key}.{name} must be a number but got "
                          f"{excerpt(value)}.")
    return value


def _check_value(key: str, value: Any, source: str, what: str) -> Any:
    """The value as TrainConfig stores it, or ConfigError naming the key."""
    try:
        return getattr(from_dict({key: value}), key)
    except ConfigError as exc:
        raise ConfigError(f"space {source}: {what} of {key}: {exc}") from None


def _parse_range(key: str, spec: dict[str, Any], source: str, free: bool = False) -> Range:
    kind = _free_kind(spec) if free else _TYPES[key]
    if kind not in ("float", "int"):
        raise ConfigError(f"space {source}: {key} is not numeric; give it `choices: [...]` "
                          f"instead of a range.")
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ConfigError(f"space {source}: {key} needs both low and high (missing "
                          f"{', '.join(missing)}), or `choices: [...]`.")
    low = _number(key, "low", spec["low"], source)
    high = _number(key, "high", spec["high"], source)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space {source}: {key}.log must be true or false but got "
                          f"{excerpt(log)}.")
    step = spec.get("step")
    if step is not None:
        step = _number(key, "step", step, source)
        if step <= 0:
            raise ConfigError(f"space {source}: {key}.step must be > 0 but got {excerpt(step)}.")
        if log:
            raise ConfigError(f"space {source}: {key} cannot have both log and step.")
    if low > high:
        raise ConfigError(f"space {source}: {key} has low {excerpt(low)} > high {excerpt(high)}.")
    if log and low <= 0:
        raise ConfigError(f"space {source}: {key} has log: true, so low must be > 0 but got "
                          f"{excerpt(low)}.")
    integer = kind == "int"
    if integer:
        for name, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and float(v) != int(v):
                raise ConfigError(f"space {source}: {key}.{name} must be an integer but got "
                                  f"{excerpt(v)}.")
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
    if not free:
        _check_value(key, low, source, "low")
        _check_value(key, high, source, "high")
    return Range(key, low, high, log, step, integer)


def _free_kind(spec: dict[str, Any]) -> str:
    """A free range's type: int when its bounds and step are integers as written."""
    bounds = [spec.get(k) for k in ("low", "high", "step") if spec.get(k) is not None]
    integer = all(isinstance(v, int) and not isinstance(v, bool) for v in bounds)
    return "int" if integer and not spec.get("log") else "float"


def _parse_choice(key: str, spec: dict[str, Any], source: str, free: bool = False) -> Choice:
    choices = spec["choices"]
    if not isinstance(choices, list):
        raise ConfigError(f"space {source}: {key}.choices must be a list but got "
                          f"{excerpt(choices)}.")
    if not choices:
        raise ConfigError(f"space {source}: {key}.choices is empty; give at least one value.")
    values: list[Any] = []
    for raw in choices:
        if isinstance(raw, (list, dict)):
            raise ConfigError(f"space {source}: {key}.choices holds {excerpt(raw)}; "
                              f"choices must be "
                              f"single values.")
        if free:
            value = raw
        else:
            if isinstance(raw, str) and _TYPES[key] in ("float", "int"):
                raw = _number(key, "choices", raw, source)
            value = _check_value(key, raw, source, "a choice")
        if not any(_same(value, v) for v in values):
            values.append(value)
    return Choice(key, tuple(values))


def parse_space(mapping: Any, source: str = "<space>", free: bool = False) -> Space:
    """A validated Space from a YAML mapping (ConfigError naming the bad key); `free`: any
    key (a user's factory's hyperparameters)."""
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, dict):
        raise ConfigError(f"space {source} must be a mapping of configuration keys to ranges, "
                          f"choices or fixed values.")
    if free and not all(isinstance(k, str) and k for k in mapping):
        raise ConfigError(f"space {source}: every key must be a non-empty name.")
    try:
        if not free:
            check_keys(mapping)
    except ConfigError as exc:
        raise ConfigError(f"space {source}: {exc}") from None
    params: list[Param] = []
    fixed: dict[str, Any] = {}
    for key, spec in mapping.items():
        if not isinstance(spec, dict):
            fixed[key] = spec if free else _check_value(key, spec, source, "the fixed value")
            continue
        unknown = [k for k in spec if k not in (*RANGE_FIELDS, "choices")]
        if unknown:
            raise ConfigError(f"space {source}: {key} has unknown field {excerpt(unknown[0])}; "
                              f"allowed: low, high, log, step, or choices.")
        if "choices" in spec:
            if any(k in spec for k in RANGE_FIELDS):
                raise ConfigError(f"space {source}: {key} has both choices and a range; give "
                                  f"one of them.")
            params.append(_parse_choice(key, spec, source, free))
        else:
            params.append(_parse_range(key, spec, source, free))
    if fixed and not free:
        try:
            from_dict(dict(fixed))
        except ConfigError as exc:
            raise ConfigError(f"space {source}: {exc}") from None
    return Space(tuple(params), fixed, source)


def shipped() -> dict[str, Path]:
    """The spaces shipped with the package (`autotune/search/spaces/*.yaml`), by name."""
    folder = resources.files("autotune.search.spaces")
    # An installed package is a folder on disk (never a zip: the wheel is not zip-safe).
    return {Path(p.name).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=str)
            if p.name.endswith(".yaml")}


def space_path(value: str | Path | None) -> Path:
    """A space file: a path, or the name of a shipped space (`aggressive_lr`); None is the
    default space."""
    if value is None:
        value = DEFAULT_SPACE
    path = Path(value)
    if path.is_file():
        return path
    named = shipped().get(str(value).removesuffix(".yaml"))
    if named is not None and path.parent == Path("."):
        return named
    names = ", ".join(shipped()) or "none"
    raise ConfigError(f"--space {quote_path(value)} is not a file nor a shipped space "
                      f"(shipped: {names}).")


def load_space(value: str | Path | None, free: bool = False) -> Space:
    """Read and validate a space file (or a shipped space by name); `free`: any key."""
    path = space_path(value)
    try:
        mapping = load_yaml(path)
    except ConfigError as exc:
        raise ConfigError(f"--space: {exc}") from None
    return parse_space(mapping, str(path), free)
