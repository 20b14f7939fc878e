"""`--trainer MODULE:FACTORY`: a user's trainer factory, found, checked and built.

`FACTORY(hparams: dict)` returns an `autotune.Trainable`; `hparams` holds the space's
fixed values and the trial's sampled parameters (the space's keys are the factory's, not
TrainConfig's). MODULE is imported from the current folder or `PYTHONPATH`. Everything
that can be wrong with the entry is a ConfigError (exit 2) naming it, raised by `check`
before the study spends a trial: a malformed entry, a module that cannot be imported, a
missing or uncallable FACTORY, a factory that raises on the space's first point, or one
that returns something that is not a Trainable.

The same loader finds a Python API study's `build(trial)` (`autotune.objective`) when it
is importable (`module:function`), so that `autotune resume --study` can continue it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from autotune.errors import ConfigError
from autotune.recovery.settings import SupervisorConfig
from autotune.recovery.trainable import Trainable
from autotune.search.setup import OwnBuild, check_trainable
from autotune.search.space import Choice, Space

__all__ = ["FactoryBuild", "check", "entry_of", "first_point", "load"]


def load(entry: str, flag: str = "--trainer") -> Callable[..., Any]:
    """The callable `MODULE:NAME` names (NAME may be dotted), or ConfigError naming it."""
    module_name, sep, name = entry.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"{flag} must be MODULE:FACTORY (e.g. mypackage.train:make) but got "
                          f"{entry!r}.")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # the current folder, as `python -m` has it
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to fix
        raise ConfigError(f"{flag} {entry!r}: module {module_name!r} cannot be imported "
                          f"({type(exc).__name__}: {exc}); it is imported from the current "
                          f"folder or PYTHONPATH.") from None
    target: Any = module
    for part in name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ConfigError(f"{flag} {entry!r}: module {module_name!r} has no {name!r}.")
    if not callable(target):
        raise ConfigError(f"{flag} {entry!r}: {name!r} is a {type(target).__name__}, not a "
                          f"callable.")
    return target


def entry_of(func: Callable[..., Any]) -> str | None:
    """`module:qualname` of a function that can be imported again, else None (a function
    of a script run as `__main__`, a lambda, a closure)."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", "")
    if not module or module == "__main__" or not qualname or "<" in qualname:
        return None
    try:
        found = load(f"{module}:{qualname}", "build")
    except ConfigError:
        return None
    return f"{module}:{qualname}" if found is func else None


def first_point(space: Space) -> dict[str, Any]:
    """The factory's hyperparameters at the space's first point: fixed values, each range's
    low end, each choice's first value."""
    return {**space.fixed, **{p.key: (p.choices[0] if isinstance(p, Choice) else p.low)
                              for p in space.params}}


class FactoryBuild(OwnBuild):
    """Trials of `FACTORY(hparams)` over a space whose keys are the factory's."""

    def __init__(self, entry: str, space: Space, epochs: int | None,
                 supervisor: SupervisorConfig) -> None:
        self.entry = entry
        self.space = space
        self.factory = load(entry)
        super().__init__(self.make, epochs or 0, supervisor, name=entry)

    def args(self, trial: Any) -> dict[str, Any]:
        return {**self.space.fixed, **dict(trial.params)}

    def fixed(self, args: dict[str, Any]) -> Trainable:
        return self.call(args)

    def call(self, args: dict[str, Any]) -> Trainable:
        """`FACTORY(args)`, checked: ConfigError naming the factory when it raises or
        returns something that is not a Trainable."""
        try:
            made = self.factory(dict(args))
        except Exception as exc:  # noqa: BLE001 - the user's factory: report it, exit 2
            raise ConfigError(f"--trainer {self.entry!r}: FACTORY({args!r}) raised "
                              f"{type(exc).__name__}: {exc}") from None
        return check_trainable(made, f"--trainer {self.entry!r}")

    def make(self, trial: Any) -> Trainable:
        return self.call({**self.space.fixed, **self.space.suggest(trial)})


def check(entry: str, space: Space, epochs: int | None) -> None:
    """Everything about `--trainer` that can be checked before a trial is spent: the entry
    loads, FACTORY builds a Trainable at the space's first point, and each trial has its
    epochs (`--epochs` or the space's `epochs`)."""
    build = FactoryBuild(entry, space, epochs, SupervisorConfig())
    if epochs is None and "epochs" not in space.fixed and space.param("epochs") is None:
        raise ConfigError("--trainer needs the epochs of a trial: give --epochs N, or an "
                          "`epochs` key in the space.")
    build.call(first_point(space))
