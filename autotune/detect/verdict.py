"""Verdicts: whether a check found a run diverged, why (a Reason), and the numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["OK", "Reason", "Verdict", "nonfinite_loss"]


class Reason(str, Enum):
    """Why a run is judged diverged; the values are the contract's `reason` strings."""

    NONFINITE_LOSS = "nonfinite_loss"
    NONFINITE_GRAD = "nonfinite_grad"
    LOSS_INCREASE = "loss_increase"
    LOSS_SPIKE = "loss_spike"
    GRAD_EXPLOSION = "grad_explosion"
    OVERFITTING = "overfitting"
    COLLAPSED = "collapsed"

    @property
    def message(self) -> str:
        """A readable description of the reason, without numbers."""
        return _REASON_MESSAGES[self]


_REASON_MESSAGES: Mapping[Reason, str] = {
    Reason.NONFINITE_LOSS: "the loss became NaN or infinite",
    Reason.NONFINITE_GRAD: "the gradient norm became NaN or infinite",
    Reason.LOSS_INCREASE: "the validation loss rose above its best by more than the allowed "
                          "increase while the training loss rose too",
    Reason.LOSS_SPIKE: "the training loss spiked far above its recent running mean",
    Reason.GRAD_EXPLOSION: "the gradient norm exploded far above its recent running median",
    Reason.OVERFITTING: "the training loss kept falling while the validation loss rose",
    Reason.COLLAPSED: "the validation loss sat at the level of a model that predicts only "
                      "how common each colour is, with the learning rate at its peak",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: diverged or not, why, and the numbers behind it.

    A Verdict is truthy exactly when it says diverged, so a per-step callback can return
    it as it is (`OK` lets training go on).
    """

    diverged: bool
    reason: Reason | None = None
    message: str = ""
    evidence: dict[str, float] = field(default_factory=dict, hash=False)
    step: int | None = None
    epoch: int | None = None

    def __bool__(self) -> bool:
        return self.diverged

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (non-finite evidence becomes null; the message keeps it)."""
        return {
            "diverged": self.diverged,
            "reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "evidence": {k: (v if math.isfinite(v) else None) for k, v in self.evidence.items()},
            "step": self.step,
            "epoch": self.epoch,
        }


OK = Verdict(False)


def nonfinite_loss(which: str, value: float, where: str, evidence: Mapping[str, float], *,
                   step: int | None = None, epoch: int | None = None) -> Verdict:
    """A NaN or infinite `which` ("training", "validation") loss at `where` ("step 7",
    "epoch 3"): the one wording the step and the epoch checks share."""
    return Verdict(True, Reason.NONFINITE_LOSS, f"The {which} loss is {value} at {where}.",
                   dict(evidence), step=step, epoch=epoch)


