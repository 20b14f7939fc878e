"""Fault injection (`AUTOTUNE_INJECT`): exact, repeatable faults for tests and benchmarks.

Two forms, joined by `,`:

- `KIND@STEP`: the fault at that one global step.
- `KIND~P`: the fault with probability P at every global step, drawn from a generator
  seeded by the run's `seed` (a fault model for benchmarks: flaky hardware, bad batches).
  Whether step s meets the fault depends on (seed, stream, kind, s) alone, never on what
  ran before, so two runs with the same seed meet the same faults at the same steps
  whatever else differs (a lower learning rate after a rollback, another arm of a
  benchmark). `stream` is 0 for a run of its own; a search gives trial n stream n, so its
  trials (which share the seed) meet faults of their own, and trial n of one arm meets
  the faults of trial n of another.

`hold@STEP` (tests only) parks the process at that step until the test lets it go: it
creates the file `held-PID-STEP` in the folder named by `AUTOTUNE_HOLD` and waits while that
file exists. A test waits for the file (the process is at a known point: every earlier epoch
trained, nothing of this step done) and deletes it to release the process, so fault tests
wait on events, never on the machine's speed. A file `free-PID` there lets that process
pass every later hold.

Steps are global optimizer steps of compute (they never go back after a rollback), so a
fault fires once. With the variable unset the injector is empty and falsy, and the
trainer skips every hook.

A `kill` first calls the functions in `BEFORE_KILL` (a supervisor's background writer
registers its flush there), so a kill at a step meets the disk with every write queued
before it done, as the tests that kill at a step expect; a real SIGKILL meets any moment.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from trainer.errors import ConfigError, excerpt

KINDS = ("nan_loss", "inf_grad", "spike", "kill", "hold")
ENV = "AUTOTUNE_INJECT"
HOLD_ENV = "AUTOTUNE_HOLD"  # the folder of `hold@STEP`'s files
HOLD_POLL_S = 0.01
SPIKE_FACTOR = 100.0
BEFORE_KILL: list[Callable[[], None]] = []
"""Called before an injected kill ends the process (see the module docstring)."""


def kill() -> None:
    """An injected kill: `BEFORE_KILL`'s flushes (the disk as the writers left it), then
    the process ends at once with 137, as if the machine died: no cleanup, no other flush."""
    for flush in list(BEFORE_KILL):
        flush()
    os._exit(137)


_STEP = re.compile(r"[0-9]{1,15}")  # ASCII digits only (str.isdigit takes '²'), bounded
BLOCK = 4096  # rate faults are drawn a block of steps at a time, each block its own stream


def _rate(kind: str, text: str, item: str) -> tuple[str, float]:
    try:
        p = float(text)
    except ValueError:
        p = -1.0
    if kind not in KINDS or kind == "hold" or not 0.0 <= p <= 1.0:
        raise ConfigError(f"{ENV} takes KIND~P items with KIND one of {', '.join(KINDS[:-1])} "
                          f"and P a probability in [0, 1] but got {excerpt(item)}.")
    return kind, p


class Injector:
    """Faults by global step ({step: {kinds}}) and by rate ({kind: probability})."""

    def __init__(self, faults: Mapping[int, set[str]] | None = None,
                 rates: Mapping[str, float] | None = None, seed: int = 0,
                 stream: int = 0) -> None:
        self.faults = {int(k): set(v) for k, v in (faults or {}).items()}
        self.rates = {k: float(p) for k, p in (rates or {}).items() if p > 0}
        self.seed = int(seed)
        self.stream = int(stream)
        self._drawn: dict[tuple[str, int], frozenset[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.faults or self.rates)

    @classmethod
    def parse(cls, spec: str, seed: int = 0, stream: int = 0) -> Injector:
        faults: dict[int, set[str]] = {}
        rates: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            if "~" in item:
                name, _, text = item.partition("~")
                kind, p = _rate(name, text, item)
                rates[kind] = p
                continue
            kind, sep, step = item.partition("@")
            if not sep or kind not in KINDS or not _STEP.fullmatch(step):
                raise ConfigError(f"{ENV} takes KIND@STEP or KIND~P items with KIND one of "
                                  f"{', '.join(KINDS)} but got {excerpt(item)}.")
            if kind == "hold" and not os.environ.get(HOLD_ENV, "").strip():
                raise ConfigError(f"{ENV} item {excerpt(item)} needs {HOLD_ENV}=DIR, the "
                                  f"folder where the held process announces itself.")
            faults.setdefault(int(step), set()).add(kind)
        return cls(faults, rates, seed, stream)

    @classmethod
    def from_env(cls, seed: int = 0, stream: int = 0) -> Injector:
        return cls.parse(os.environ.get(ENV, ""), seed, stream)

    def drawn_steps(self, kind: str, block: int) -> frozenset[int]:
        """The steps of block `block` (steps block*BLOCK ...) where the rate fault `kind`
        fires: a pure function of (seed, stream, kind, block)."""
        key = (kind, block)
        if key not in self._drawn:
            rng = np.random.default_rng([self.seed, self.stream, KINDS.index(kind), block])
            hits = np.flatnonzero(rng.random(BLOCK) < self.rates[kind])
            self._drawn[key] = frozenset(int(h) + block * BLOCK for h in hits)
        return self._drawn[key]

    def fires(self, step: int, kind: str) -> bool:
        """Whether the fault `kind` fires at global step `step`."""
        if kind in self.faults.get(step, ()):
            return True
        return kind in self.rates and step in self.drawn_steps(kind, step // BLOCK)

    def on_step_start(self, step: int) -> None:
        if self.fires(step, "kill"):
            kill()
        if self.fires(step, "hold"):
            hold(Path(os.environ[HOLD_ENV]), step)

    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        if self.fires(step, "nan_loss"):
            return loss * float("nan")
        if self.fires(step, "spike"):
            return loss * SPIKE_FACTOR
        return loss

    def on_grad(self, step: int, model: torch.nn.Module) -> None:
        if self.fires(step, "inf_grad"):
            grad = next(p.grad for p in model.parameters() if p.grad is not None)
            grad.view(-1)[0] = float("inf")


def hold(folder: Path, step: int) -> None:
    """Announce `held-PID-STEP` in `folder` and wait until a test deletes it."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / f"free-{os.getpid()}").exists():
        return
    mark = folder / f"held-{os.getpid()}-{step}"
    mark.touch()
    while mark.exists():
        time.sleep(HOLD_POLL_S)
