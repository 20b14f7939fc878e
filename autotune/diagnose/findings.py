"""Findings: what was seen (with the numbers), why it matters, what to change.

A `Finding` carries a `FindingCode` (the contract's strings), a severity, the evidence it
rests on and a fix; `likelihood` (0..1) orders a report, most likely cause first.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["Finding", "FindingCode", "Severity", "finding", "ordered", "render_source",
           "render_text"]


class FindingCode(str, Enum):
    """The `code` of a finding (the strings of `diagnose --json`)."""

    LR_SCHEDULE_MISMATCH = "lr_schedule_mismatch"
    """The applied learning rate departs from the intended schedule."""
    LR_TOO_HIGH = "lr_too_high"
    """The loss rises or oscillates while the learning rate is at or near its peak."""
    COLLAPSED = "collapsed"
    """The validation loss sits at a trivial level: the colour-frequency level (ARC runs)."""
    NONFINITE_LOSS = "nonfinite_loss"
    """A NaN or infinite loss."""
    NONFINITE_GRAD = "nonfinite_grad"
    """A NaN or infinite gradient norm while the loss was finite."""
    NOT_LEARNING = "not_learning"
    """The loss has been flat from the start: the run never learned (no chance level
    needed)."""
    GAVE_UP = "gave_up"
    """Our run spent its recovery budget."""
    DIVERGED = "diverged"
    """Our run diverged and was not recovered."""
    OVERFITTING = "overfitting"
    """The training loss falls while the validation loss rises."""
    LOSS_INCREASE = "loss_increase"
    """A loss rises for a reason other than the step size (or one that cannot be told)."""
    LOSS_SPIKE = "loss_spike"
    """A sudden jump against the recent trend."""
    SMOOTHING_FLOOR = "smoothing_floor"
    """Label smoothing raises the floor of the training loss."""
    RECOVERED = "recovered"
    """Our run diverged and was recovered."""
    LR_CHECK_SKIPPED = "lr_check_skipped"
    """No intended or no applied learning rate: the learning-rate checks did not run."""
    HEALTHY = "healthy"
    """Nothing wrong found."""
    NO_DATA = "no_data"
    """The history has no records."""


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


# How likely each finding is the cause; the order of the report.
LIKELIHOOD: Mapping[FindingCode, float] = {
    FindingCode.LR_SCHEDULE_MISMATCH: 0.95,
    FindingCode.LR_TOO_HIGH: 0.85,
    FindingCode.COLLAPSED: 0.82,
    FindingCode.NONFINITE_LOSS: 0.8,
    FindingCode.NONFINITE_GRAD: 0.8,
    FindingCode.NOT_LEARNING: 0.78,
    FindingCode.GAVE_UP: 0.75,
    FindingCode.DIVERGED: 0.75,
    FindingCode.OVERFITTING: 0.65,
    FindingCode.LOSS_INCREASE: 0.6,
    FindingCode.LOSS_SPIKE: 0.5,
    FindingCode.SMOOTHING_FLOOR: 0.35,
    FindingCode.RECOVERED: 0.3,
    FindingCode.LR_CHECK_SKIPPED: 0.05,
    FindingCode.HEALTHY: 1.0,
    FindingCode.NO_DATA: 1.0,
}


@dataclass(frozen=True)
class Finding:
    """One root-cause finding: what was seen (with numbers), why it matters, what to change.

    `likelihood` (0..1) orders the report: how likely this is the cause of the trouble.
    """

    code: FindingCode
    severity: Severity
    message: str
    evidence: dict[str, Any]
    fix: str
    likelihood: float

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "code", FindingCode(self.code))
            object.__setattr__(self, "severity", Severity(self.severity))
        except ValueError as exc:
            raise ValueError(f"{exc}; severities: {', '.join(s.value for s in Severity)}."
                             ) from None
        if not 0.0 <= self.likelihood <= 1.0:
            raise ValueError(f"likelihood must be in [0, 1] but got {self.likelihood!r}.")
        object.__setattr__(self, "evidence", evidence_json(dict(self.evidence)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by `diagnose --json`."""
        return {"code": self.code.value, "severity": self.severity.value,
                "message": self.message, "evidence": self.evidence, "fix": self.fix}


def finding(code: FindingCode, severity: Severity, message: str, evidence: Mapping[str, Any],
            fix: str, likelihood: float | None = None) -> Finding:
    """A Finding ranked by its code's usual likelihood unless `likelihood` is given."""
    chosen = LIKELIHOOD[code] if likelihood is None else likelihood
    return Finding(code, severity, message, dict(evidence), fix, chosen)


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    """Most likely cause first (a stable sort: equal ones keep their order)."""
    return sorted(findings, key=lambda f: -f.likelihood)


def evidence_json(value: Any) -> Any:
    """Evidence for JSON: `autotune.jsonio.jsonable`'s NaN-safe strings, and floats kept to
    6 significant digits so that a report does not show float noise."""
    from autotune.jsonio import jsonable

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return float(f"{number:.6g}") if math.isfinite(number) else jsonable(number)
    if isinstance(value, Mapping):
        return {str(k): evidence_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [evidence_json(v) for v in value]
    return str(value)


def render_text(findings: Sequence[Finding]) -> str:
    """The findings as plain text, one paragraph each, for the CLI to print."""
    paragraphs = []
    for f in findings:
        text = f"[{f.severity.value.upper()}] {f.code.value}: {f.message}"
        if f.fix:
            text += f"\n  Fix: {f.fix}"
        paragraphs.append(text)
    return "\n\n".join(paragraphs)


def render_source(source: Mapping[str, Any]) -> str:
    """What was read and how, one line: `Read LOG as FORMAT (N rows): train_loss <-
    'Loss/Train_Epoch', ...`."""
    rows, records = source.get("rows", 0), source.get("records", 0)
    size = f"{rows} rows" + (f", pooled into {records} records" if source.get("pooled")
                             else "")
    mapping = ", ".join(f"{ours} <- {theirs!r}" for ours, theirs in
                        source.get("columns", {}).items())
    return (f"Read {source.get('path')} as {source.get('format')} ({size})"
            + (f": {mapping}" if mapping else "") + ".")
