"""Fault injection (`AUTOTUNE_INJECT=KIND@STEP,...`): exact, repeatable faults for tests.

Steps are global optimizer steps of compute (they never go back after a rollback), so a
fault fires once. With the variable unset the injector is empty and falsy, and the
trainer skips every hook.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from trainer.errors import ConfigError

KINDS = ("nan_loss", "inf_grad", "spike", "kill")
ENV = "AUTOTUNE_INJECT"
SPIKE_FACTOR = 100.0


class Injector:
    """Faults by global step: {step: {kinds}}."""

    def __init__(self, faults: Mapping[int, set[str]] | None = None) -> None:
        self.faults = {int(k): set(v) for k, v in (faults or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.faults)

    @classmethod
    def parse(cls, spec: str) -> Injector:
        faults: dict[int, set[str]] = {}
        for item in filter(None, (p.strip() for p in spec.split(","))):
            kind, sep, step = item.partition("@")
            if not sep or kind not in KINDS or not step.isdigit():
                raise ConfigError(f"{ENV} takes KIND@STEP items with KIND one of "
                                  f"{', '.join(KINDS)} but got {item!r}.")
            faults.setdefault(int(step), set()).add(kind)
        return cls(faults)

    @classmethod
    def from_env(cls) -> Injector:
        return cls.parse(os.environ.get(ENV, ""))

    def _has(self, step: int, kind: str) -> bool:
        return kind in self.faults.get(step, ())

    def on_step_start(self, step: int) -> None:
        if self._has(step, "kill"):
            os._exit(137)  # as if the machine died: no cleanup, no flush

    def on_loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        if self._has(step, "nan_loss"):
            return loss * float("nan")
        if self._has(step, "spike"):
            return loss * SPIKE_FACTOR
        return loss

    def on_grad(self, step: int, model: torch.nn.Module) -> None:
        if self._has(step, "inf_grad"):
            first = next(p for p in model.parameters() if p.grad is not None)
            first.grad.view(-1)[0] = float("inf")
