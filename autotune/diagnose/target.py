"""`diagnose_target`: the findings for what `autotune diagnose TARGET` is given.

A run directory's intended schedule comes from its config.yaml (an ARC run's; the flags
override it). A log's, and a run of any other trainer's, comes from the flags: without
`--lr` its schedule checks are skipped, and so they are when the log has no learning rate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.detect import DetectorConfig, detector_config
from autotune.diagnose.findings import Finding, FindingCode, Severity, finding, ordered
from autotune.diagnose.intended import RUN_CLASSES, Intended, check_classes
from autotune.diagnose.judge import diagnose
from autotune.diagnose.readers import Log, read_log, read_run
from autotune.diagnose.readers.columns import COLUMNS
from autotune.diagnose.readers.rundir import is_run_dir
from autotune.diagnose.schedule import warmup_fit
from autotune.diagnose.timeline import points
from autotune.errors import ConfigError, excerpt

__all__ = ["Report", "diagnose_report", "diagnose_target", "judge_log", "parse_columns"]


@dataclass(frozen=True)
class Report:
    """What `autotune diagnose` prints: the findings, and what was read and how."""

    findings: list[Finding]
    source: dict[str, Any]
    """`Log.describe()`: the format, rows, records, and our column name -> the log's."""

    def to_dict(self) -> dict[str, Any]:
        return {"log": self.source, "findings": [f.to_dict() for f in self.findings]}


def diagnose_target(target: Path | str, lr: float | None = None,
                    warmup_epochs: float | None = None, schedule: str | None = None,
                    epochs: int | None = None, *, classes: int | None = None,
                    columns: Mapping[str, str] | None = None) -> list[Finding]:
    """Findings for a run directory or a training log (what `autotune diagnose` prints).

    Args:
        target: a run directory, or a training log (file or folder) of any trainer.
        lr, warmup_epochs, schedule, epochs: the intended schedule (`--lr`, ...).
        classes: the number of output classes (`--classes`), for the chance level.
        columns: our column name -> the log's (`--column NAME=THEIR_NAME`).
    """
    return diagnose_report(target, lr, warmup_epochs, schedule, epochs, classes=classes,
                           columns=columns).findings


def diagnose_report(target: Path | str, lr: float | None = None,
                    warmup_epochs: float | None = None, schedule: str | None = None,
                    epochs: int | None = None, *, classes: int | None = None,
                    columns: Mapping[str, str] | None = None) -> Report:
    """`diagnose_target`'s findings with what was read: the format and the column mapping."""
    target = Path(target)
    check_classes(classes)
    flags = _Flags(lr, warmup_epochs, schedule, epochs)
    overrides = {k: v for k, v in dataclasses.asdict(flags).items() if v is not None}
    if target.is_dir() and is_run_dir(target):
        run = read_run(target)
        source = {"path": str(target), "format": "run", "unit": "epoch",
                  "rows": len(run.history), "records": len(run.history), "pooled": False,
                  "columns": {k: k for k in COLUMNS if any(k in r for r in run.history)}}
        if run.train_config is not None:
            k = classes or RUN_CLASSES
            intended = Intended.from_config(run.train_config, k).with_changes(overrides)
            cfg = detector_config(run.config, reference_loss=math.log(k))
            return Report(diagnose(run.history, intended, run.events, run.steps_per_epoch,
                                   classes=k, arc=True, detector=cfg), source)
        cfg = detector_config(run.config)
        return Report(_judged(run.history, run.events, run.steps_per_epoch, flags, classes,
                              False, "epoch", None, cfg, has_lr=_has_lr(run.history)), source)
    log = read_log(target, columns)
    return Report(judge_log(log, flags, classes), log.describe())


def judge_log(log: Log, flags: Mapping[str, Any] | _Flags,
              classes: int | None) -> list[Finding]:
    """The findings for a log read by `read_log` (`--follow` judges what it has read so far
    this way); `flags` as `diagnose_target`'s (learning_rate, warmup_epochs, schedule,
    epochs)."""
    given = flags if isinstance(flags, _Flags) else _Flags(**flags)
    return _judged(log.records, (), None, given, classes, log.per_step, log.unit,
                   log.planned_epochs, None, has_lr=_has_lr(log.records), pooled=log.pooled,
                   val_size=log.val_size)


def _has_lr(records: Sequence[Mapping[str, float]]) -> bool:
    return any("lr" in r for r in records)


@dataclasses.dataclass(frozen=True)
class _Flags:
    """The intended schedule as `autotune diagnose` was told it (None: not given)."""

    learning_rate: float | None
    warmup_epochs: float | None
    schedule: str | None
    epochs: int | None


def _judged(history: Sequence[Mapping[str, float]], events: Sequence[Mapping[str, object]],
            steps_per_epoch: int | None, flags: _Flags, classes: int | None,
            per_step: bool, unit: str, planned: int | None, cfg: DetectorConfig | None, *,
            has_lr: bool, pooled: bool = False, val_size: int | None = None) -> list[Finding]:
    lr = flags.learning_rate
    epochs = flags.epochs if flags.epochs is not None else planned
    # Built even without `lr`, so that bad flags are refused either way.
    intended = _log_intended(history, lr, flags.warmup_epochs, flags.schedule,
                             epochs, classes, assumed_epochs=flags.epochs is None
                             and planned is None)

    def judge(given: Intended | None) -> list[Finding]:
        return diagnose(history, given, events, steps_per_epoch, classes=classes, arc=False,
                        per_step=per_step, unit=unit, detector=cfg, pooled=pooled,
                        val_size=val_size)

    if lr is not None and has_lr:
        return judge(intended)
    if lr is None:
        message = ("No intended learning rate was given (--lr), so the learning-rate "
                   "schedule checks were skipped; the loss checks ran.")
        fix = "pass --lr (and --warmup-epochs, --schedule, --epochs) to check the schedule too."
    else:
        message = ("The log has no learning-rate column, so the schedule check and the "
                   "lr_too_high check (which needs the learning rate at each record) were "
                   "skipped; the loss checks ran.")
        fix = ("log the learning rate (for example lr or learning_rate each epoch), or map "
               "the column that holds it with --column lr=THEIR_NAME.")
    skipped = finding(FindingCode.LR_CHECK_SKIPPED, Severity.INFO, message,
                      {"lr_logged": has_lr}, fix)
    found = judge(None)
    return ordered([*found, skipped])


def _log_intended(history: Sequence[Mapping[str, float]], lr: float | None,
                  warmup_epochs: float | None, schedule: str | None, epochs: int | None,
                  classes: int | None, *,
                  assumed_epochs: bool) -> Intended:
    """A log's intended schedule from the flags; what they leave out is marked assumed.

    Missing `epochs` is the log's length and missing `schedule` cosine (never fitted to the
    log: a flat lr fits `constant` perfectly and would hide the bug); a missing warmup is
    the one near where the log's lr first reaches its peak that fits the log best.
    """
    given = {"epochs": None if assumed_epochs else epochs, "schedule": schedule,
             "warmup_epochs": warmup_epochs}
    assumed = tuple(key for key, value in given.items() if value is None)
    intended = Intended(1e-3 if lr is None else lr,
                        0.0 if warmup_epochs is None else warmup_epochs,
                        "cosine" if schedule is None else schedule,
                        _planned_epochs(history) if epochs is None else epochs,
                        num_classes=classes, assumed=assumed)
    if lr is not None and warmup_epochs is None:
        intended = _fit_warmup(history, intended)
    return intended


def _fit_warmup(history: Sequence[Mapping[str, float]], intended: Intended) -> Intended:
    pts = points(history)
    lrs = [(p.epoch, p.lr) for p in pts if p.lr is not None and math.isfinite(p.lr)]
    if not lrs:
        return intended
    peak = max(v for _, v in lrs)
    if lrs[0][1] >= 0.9 * peak:
        return intended
    reach = next(e for e, v in lrs if v >= 0.98 * peak)
    options = [intended] + [dataclasses.replace(intended, warmup_epochs=w)
                            for w in (reach - 1, reach, reach + 1) if 0 < w <= intended.epochs]
    return min(options, key=lambda it: warmup_fit(pts, it))


def _planned_epochs(history: Sequence[Mapping[str, float]]) -> int:
    """The epochs a log covers: its last epoch, plus one when it counts from 0."""
    labels = [r["epoch"] for r in history if math.isfinite(r.get("epoch", math.nan))]
    if not labels:
        return 1
    zero_based = min(labels) == 0 and all(float(e).is_integer() for e in labels)
    return max(int(math.ceil(max(labels))) + int(zero_based), 1)


def parse_columns(items: Sequence[str]) -> dict[str, str]:
    """`--column NAME=THEIR_NAME` items as {our name: the log's name}."""
    out: dict[str, str] = {}
    for item in items:
        ours, sep, theirs = item.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if not sep or ours not in COLUMNS or not theirs:
            raise ConfigError(f"--column must be NAME=THEIR_NAME with NAME one of "
                              f"{', '.join(COLUMNS)} but got {excerpt(item)}.")
        out[ours] = theirs
    return out
