"""Root-cause findings for a diverged or suspicious run: our run directories and foreign logs.

`diagnose` reads a metrics history (one record per epoch, or per logging step) and, when it
is known, the intended learning-rate schedule, and explains what went wrong the way an
experienced engineer would: a schedule that does not do what was meant, a learning rate too
high for the model, a non-finite loss, a spike, overfitting, a loss floor raised by label
smoothing. Every finding carries the numbers it rests on and a concrete fix; the findings
come ordered by how likely each is the cause.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autotune.detect.divergence import DetectorConfig, check_collapse
from trainer.config import TrainConfig, from_dict, load_yaml
from trainer.errors import ConfigError
from trainer.schedule import lr_at_epoch

__all__ = [
    "Finding",
    "Intended",
    "RunRecord",
    "diagnose",
    "diagnose_target",
    "read_log",
    "read_run",
    "render_text",
    "smoothing_floor",
]

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")
ARC_CLASSES = 10  # colours: the output classes assumed for a foreign ARC log
RUN_CLASSES = 12  # our runs: 10 colours + PAD + the end-of-grid marker

# Thresholds. Each is a judgement call; they are named so that tests and readers see them.
LR_TOLERANCE = 0.10  # |applied - intended| as a fraction of the peak before a record is off
LR_RATIO_TOLERANCE = 1.25  # ... and applied/intended outside [1/1.25, 1.25]
MISMATCH_SHARE = 0.2  # share of the records that must be off to call the schedule wrong
NEAR_PEAK = 0.7  # a learning rate >= this fraction of the run's highest is "near the peak"
RISE = 0.10  # a loss this far above its best for several records running has risen
SPIKE_RATIO = 1.5  # a spike: this many times the running mean ...
SPIKE_SIGMAS = 4.0  # ... and this many running deviations above it
SPIKE_WINDOW = 5  # records in the running mean
OSCILLATION_SWING = 0.15  # mean change per record, relative to the loss, of an oscillation
OVERFIT_RECORDS = 3  # validation records rising after the best before it is overfitting
OVERFIT_RISE = 0.03  # ... by at least this fraction of the best validation loss

# How likely each finding is the cause; the order of the report.
_LIKELIHOOD = {
    "lr_schedule_mismatch": 0.95,
    "lr_too_high": 0.85,
    "collapsed": 0.82,
    "nonfinite_loss": 0.8,
    "gave_up": 0.75,
    "diverged": 0.75,
    "overfitting": 0.65,
    "loss_increase": 0.6,
    "loss_spike": 0.5,
    "smoothing_floor": 0.35,
    "recovered": 0.3,
    "lr_check_skipped": 0.05,
}
_EXPLAINED_LR_TOO_HIGH = 0.6  # lr_too_high when a schedule bug already explains it
_ASSUMED_MISMATCH = 0.55  # a mismatch against a schedule the flags did not fully give

REQUIRED_COLUMNS = ("epoch", "train_loss", "lr")
LOG_COLUMNS = ("epoch", "train_loss", "lr", "val_loss", "grad_norm", "step")
RUN_KEYS = LOG_COLUMNS + ("global_epoch", "val_cell_acc", "val_exact", "time_s",
                          "steps_per_epoch")
ALIASES = {"loss": "train_loss", "learning_rate": "lr", "eval_loss": "val_loss"}
_DATA_COLUMNS = ("train_loss", "lr", "val_loss", "grad_norm")
_NEEDS = "the columns epoch, train_loss (or loss) and lr"
_INTENDED_KEYS = ("learning_rate", "warmup_epochs", "schedule", "epochs", "label_smoothing",
                  "min_lr_ratio")


# --------------------------------------------------------------------------- the findings


@dataclass(frozen=True)
class Finding:
    """One root-cause finding: what was seen (with numbers), why it matters, what to change.

    `likelihood` (0..1) orders the report: how likely this is the cause of the trouble.
    """

    code: str
    severity: str
    message: str
    evidence: dict[str, Any]
    fix: str
    likelihood: float

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)} but got "
                             f"{self.severity!r}.")
        if not 0.0 <= self.likelihood <= 1.0:
            raise ValueError(f"likelihood must be in [0, 1] but got {self.likelihood!r}.")
        object.__setattr__(self, "evidence", _jsonable(dict(self.evidence)))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by `diagnose --json`."""
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "evidence": self.evidence, "fix": self.fix}


def _finding(code: str, severity: str, message: str, evidence: Mapping[str, Any], fix: str,
             likelihood: float | None = None) -> Finding:
    chosen = _LIKELIHOOD.get(code, 0.5) if likelihood is None else likelihood
    return Finding(code, severity, message, dict(evidence), fix, chosen)


def _jsonable(value: Any) -> Any:
    """`value` with non-finite floats as strings and floats kept to 6 significant digits."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return float(f"{number:.6g}") if math.isfinite(number) else str(number)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def render_text(findings: Sequence[Finding]) -> str:
    """The findings as plain text, one paragraph each, for the CLI to print."""
    paragraphs = []
    for f in findings:
        text = f"[{f.severity.upper()}] {f.code}: {f.message}"
        if f.fix:
            text += f"\n  Fix: {f.fix}"
        paragraphs.append(text)
    return "\n\n".join(paragraphs)


# ------------------------------------------------------------------- the intended schedule


@dataclass(frozen=True)
class Intended:
    """The learning-rate schedule a run was meant to follow, and its label smoothing.

    Validated like a TrainConfig (ConfigError naming the key); `num_classes` is the number
    of output classes the smoothing is spread over (10 ARC colours; 12 for our runs);
    `assumed` names the keys nobody gave (a log's flags left them out), which weakens a
    schedule mismatch judged against them.
    """

    learning_rate: float
    warmup_epochs: float
    schedule: str
    epochs: int
    label_smoothing: float = 0.0
    min_lr_ratio: float = 0.05
    num_classes: int = ARC_CLASSES
    assumed: tuple[str, ...] = ()
    config: TrainConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        config = TrainConfig().replace(**{k: getattr(self, k) for k in _INTENDED_KEYS})
        for key in _INTENDED_KEYS:
            object.__setattr__(self, key, getattr(config, key))
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "assumed", tuple(self.assumed))
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ConfigError(f"num_classes must be an integer >= 2 but got {k!r}.")
        unknown = [key for key in self.assumed if key not in _INTENDED_KEYS]
        if unknown:
            raise ConfigError(f"assumed must name keys among {', '.join(_INTENDED_KEYS)} but "
                              f"got {unknown[0]!r}.")

    @classmethod
    def from_config(cls, config: TrainConfig, num_classes: int = RUN_CLASSES) -> Intended:
        """The schedule a TrainConfig asks for."""
        return cls(**{k: getattr(config, k) for k in _INTENDED_KEYS}, num_classes=num_classes)

    def with_changes(self, changes: Mapping[str, Any]) -> Intended:
        """A copy with the schedule keys of `changes` applied ({key: [old, new]} or new)."""
        updates = {k: _new_value(v) for k, v in changes.items() if k in _INTENDED_KEYS}
        return dataclasses.replace(self, **updates) if updates else self

    def lr_at_epoch(self, epoch: float) -> float:
        """The intended learning rate at a (fractional) epoch of training."""
        return lr_at_epoch(max(epoch, 0.0), self.config)


def _new_value(change: Any) -> Any:
    if isinstance(change, (list, tuple)) and len(change) == 2:
        return change[1]
    return change


def smoothing_floor(label_smoothing: float, num_classes: int) -> float:
    """The lowest cross-entropy reachable with label smoothing: the smoothed target's entropy.

    The smoothed target puts 1 - eps + eps/K on the true class and eps/K on each other one.
    """
    if label_smoothing <= 0.0:
        return 0.0
    on = 1.0 - label_smoothing + label_smoothing / num_classes
    off = label_smoothing / num_classes
    return -on * math.log(on) - (num_classes - 1) * off * math.log(off)


# ------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunRecord:
    """What a run directory holds: the starting configuration, the metrics, the events."""

    path: Path
    config: TrainConfig
    history: list[dict[str, float]]
    events: list[dict[str, Any]]
    steps_per_epoch: int | None


def read_log(path: Path) -> list[dict[str, float]]:
    """A training log of any trainer, CSV or JSON Lines, as one record per row.

    Columns `epoch`, `train_loss` (or `loss`) and `lr` are required; `val_loss`,
    `grad_norm` and `step` are used when present. "nan" and "inf" are numbers; an empty
    cell is a missing value. Rows of one epoch that hold different columns (a training row
    and a validation row) are merged.
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise ConfigError(f"{path} is empty: a training log needs {_NEEDS}.")
    rows = _csv_rows(text, path) if _is_csv(path, text) else _json_rows(text, path)
    records = _records(rows, path, LOG_COLUMNS)
    _require(records, path, "column")
    return _merge_rows(records)


def read_run(run_dir: Path) -> RunRecord:
    """The config.yaml, metrics.jsonl and events.jsonl of a run directory."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    missing = [p.name for p in (config_path, metrics_path) if not p.is_file()]
    if not run_dir.is_dir() or missing:
        what = "it is not a folder" if not run_dir.is_dir() else "it has no " + " and no ".join(
            missing)
        raise ConfigError(f"{run_dir} is not a run directory: {what} (give a folder written "
                          f"by `autotune train`, or a training log as .csv or .jsonl).")
    try:
        config = from_dict(load_yaml(config_path))
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    records = _records(_json_rows(_read_text(metrics_path), metrics_path), metrics_path,
                       RUN_KEYS)
    if not records:
        raise ConfigError(f"{metrics_path} has no records yet: the run has not finished an "
                          f"epoch.")
    _require(records, metrics_path, "key")
    events_path = run_dir / "events.jsonl"
    events: list[dict[str, Any]] = []
    if events_path.is_file():
        events = [row for _, row in _json_rows(_read_text(events_path), events_path)]
    return RunRecord(run_dir, config, records, events, _steps_per_epoch(records))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} cannot be read: it is not UTF-8 text (a training log must "
                          f"be CSV or JSON Lines).") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}.") from None


def _is_csv(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return False
    if suffix in (".csv", ".tsv", ".txt"):
        return True
    return not text.lstrip().startswith(("{", "["))


def _csv_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                            skipinitialspace=True,
                            sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a valid CSV file: {first}.") from None
    # Line numbers as an editor shows them: the header is line 1.
    return [(i + 2, row) for i, row in enumerate(frame.to_dict("records"))]


def _json_rows(text: str, path: Path) -> list[tuple[int, dict[str, Any]]]:
    if text.lstrip().startswith("["):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}."
                              ) from None
        if not all(isinstance(row, dict) for row in loaded):
            raise ConfigError(f"{path} must be a list of JSON objects, one per record.")
        return [(i + 1, row) for i, row in enumerate(loaded)]
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    rows: list[tuple[int, dict[str, Any]]] = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == lines[-1][0] and rows:
                # A process killed while appending leaves half a last line: skip it.
                log.warning("%s: skipping the unfinished last line %d", path, n)
                continue
            raise ConfigError(f"{path}: line {n} is not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: line {n} is not a JSON object.")
        rows.append((n, row))
    return rows


def _number(value: Any) -> float | None:
    """`value` as a float, None when missing; ValueError when it is not a number."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        return None if text.lower() in ("", "none", "null") else float(text)
    raise ValueError(value)


def _records(rows: Sequence[tuple[int, Mapping[str, Any]]], path: Path,
             numeric: Sequence[str]) -> list[dict[str, float]]:
    """Numeric records from raw rows: aliases renamed, known columns checked, empty dropped."""
    records = []
    for line, raw in rows:
        row = {str(k).strip().lower(): v for k, v in raw.items()}
        for alias, name in ALIASES.items():
            if alias in row and _is_missing(row.get(name)):
                row[name] = row.pop(alias)
        record: dict[str, float] = {}
        for key, value in row.items():
            try:
                number = _number(value)
            except (ValueError, OverflowError):
                if key in numeric:
                    raise ConfigError(f"{path}: line {line}: {key} is {value!r}, not a number "
                                      f"(nan and inf are allowed).") from None
                continue
            if number is not None:
                record[key] = number
        if not any(key in record for key in _DATA_COLUMNS):
            continue
        epoch = record.get("epoch")
        if epoch is None or not math.isfinite(epoch):
            raise ConfigError(f"{path}: line {line} has no finite epoch (got "
                              f"{row.get('epoch')!r}); every record needs one.")
        records.append(record)
    return records


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _require(records: Sequence[Mapping[str, float]], path: Path, word: str) -> None:
    found = {key for record in records for key in record}
    for column in REQUIRED_COLUMNS:
        if column not in found:
            have = ", ".join(sorted(found)) or "none"
            raise ConfigError(f"{path}: missing {word} {column!r}; a training log needs "
                              f"{_NEEDS} (found: {have}).")


def _merge_rows(records: list[dict[str, float]]) -> list[dict[str, float]]:
    """Merge consecutive rows of one epoch whose values are disjoint (train row + val row)."""
    merged: list[dict[str, float]] = []
    for record in records:
        previous = merged[-1] if merged else None
        if (previous is not None and previous["epoch"] == record["epoch"]
                and not (set(previous) & set(record)) - {"epoch", "step"}):
            merged[-1] = {**previous, **record}
            continue
        merged.append(record)
    return merged


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


# ---------------------------------------------------------------------------- the target


def diagnose_target(target: Path, lr: float | None, warmup_epochs: float | None,
                    schedule: str | None, epochs: int | None) -> list[Finding]:
    """Findings for a run directory or a training log (what `autotune diagnose` prints).

    A run directory's intended schedule comes from its config.yaml (the flags override it);
    a log's comes from the flags, and without `lr` its schedule checks are skipped.
    """
    target = Path(target)
    flags = {"learning_rate": lr, "warmup_epochs": warmup_epochs, "schedule": schedule,
             "epochs": epochs}
    overrides = {k: v for k, v in flags.items() if v is not None}
    if target.is_dir():
        run = read_run(target)
        intended = Intended.from_config(run.config).with_changes(overrides)
        return diagnose(run.history, intended, run.events, run.steps_per_epoch)
    if not target.exists():
        raise ConfigError(f"{target} does not exist: give a run directory or a training log "
                          f"(.csv or .jsonl).")
    history = read_log(target)
    # Built even without `lr`, so that bad flags are refused either way.
    intended = _log_intended(history, lr, warmup_epochs, schedule, epochs)
    if lr is not None:
        return diagnose(history, intended)
    skipped = _finding(
        "lr_check_skipped", "info",
        "No intended learning rate was given (--lr), so the learning-rate schedule checks "
        "were skipped; the loss checks ran.", {},
        "pass --lr (and --warmup-epochs, --schedule, --epochs) to check the schedule too.")
    return _ordered([*diagnose(history, None), skipped])


def _log_intended(history: Sequence[Mapping[str, float]], lr: float | None,
                  warmup_epochs: float | None, schedule: str | None, epochs: int | None
                  ) -> Intended:
    """A log's intended schedule from the flags; what they leave out is marked assumed.

    Missing `epochs` is the log's length and missing `schedule` cosine (never fitted to the
    log: a flat lr fits `constant` perfectly and would hide the bug); a missing warmup is
    the one near where the log's lr first reaches its peak that fits the log best.
    """
    flags = {"epochs": epochs, "schedule": schedule, "warmup_epochs": warmup_epochs}
    assumed = tuple(key for key, value in flags.items() if value is None)
    intended = Intended(1e-3 if lr is None else lr,
                        0.0 if warmup_epochs is None else warmup_epochs,
                        "cosine" if schedule is None else schedule,
                        _planned_epochs(history) if epochs is None else epochs,
                        assumed=assumed)
    if lr is not None and warmup_epochs is None:
        intended = _fit_warmup(history, intended)
    return intended


def _fit_warmup(history: Sequence[Mapping[str, float]], intended: Intended) -> Intended:
    points = _points(history)
    lrs = [(p.epoch, p.lr) for p in points if p.lr is not None and math.isfinite(p.lr)]
    if not lrs:
        return intended
    peak = max(v for _, v in lrs)
    if lrs[0][1] >= 0.9 * peak:
        return intended
    reach = next(e for e, v in lrs if v >= 0.98 * peak)
    options = [intended] + [dataclasses.replace(intended, warmup_epochs=w)
                            for w in (reach - 1, reach, reach + 1) if 0 < w <= intended.epochs]
    return min(options, key=lambda it: _warmup_fit(points, it))


def _with_assumptions(finding: Finding, intended: Intended) -> Finding:
    """A schedule finding that says what the flags left to assumption.

    With the planned epochs or the schedule only assumed (a diverged run's log often stops
    early), the mismatch is a warning ranked below what the losses show.
    """
    if not intended.assumed:
        return finding
    assumed = {key: getattr(intended, key) for key in intended.assumed}
    weaker = {"severity": "warning", "likelihood": _ASSUMED_MISMATCH} if _weak(intended) \
        else {}
    said = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                     for k, v in assumed.items())
    return dataclasses.replace(
        finding, message=f"{finding.message} Not given as flags, so assumed: {said}.",
        evidence={**finding.evidence, "assumed": dict(assumed)},
        fix=f"{finding.fix} If the assumed {', '.join(assumed)} are wrong, pass them "
            f"(--epochs, --warmup-epochs, --schedule) and diagnose again.", **weaker)


def _weak(intended: Intended) -> bool:
    return "epochs" in intended.assumed or "schedule" in intended.assumed


def _planned_epochs(history: Sequence[Mapping[str, float]]) -> int:
    """The epochs a log covers: its last epoch, plus one when it counts from 0."""
    labels = [r["epoch"] for r in history if math.isfinite(r.get("epoch", math.nan))]
    if not labels:
        return 1
    zero_based = min(labels) == 0 and all(float(e).is_integer() for e in labels)
    return max(int(math.ceil(max(labels))) + int(zero_based), 1)


# ------------------------------------------------------------------------------ diagnose


@dataclass(frozen=True)
class _Point:
    index: int
    epoch: float
    global_epoch: float
    step: float | None
    train_loss: float | None
    val_loss: float | None
    lr: float | None
    grad_norm: float | None
    global_logged: bool = False  # the record carried its own global_epoch


@dataclass(frozen=True)
class _Context:
    points: list[_Point]
    intents: list[tuple[Intended, ...]] | None  # the schedules that may have been in force
    peak_lr: float | None  # the highest applied learning rate
    schedule_bug: str | None  # the pattern of the lr_schedule_mismatch finding, if any

    def base_lr(self, point: _Point) -> float | None:
        """The peak learning rate the run meant to use at `point`."""
        if self.intents is not None:
            return self.intents[point.index][0].learning_rate
        return self.peak_lr

    def lr_fraction(self, lr: float | None) -> float | None:
        if lr is None or self.peak_lr is None:
            return None
        return lr / self.peak_lr


def diagnose(history: Sequence[Mapping[str, Any]], intended: Intended | None,
             events: Sequence[Mapping[str, Any]] = (),
             steps_per_epoch: int | None = None) -> list[Finding]:
    """Root-cause findings for a metrics history, most likely cause first.

    Args:
        history: records in the order written, with `epoch`, `train_loss`, `lr` and
            optionally `val_loss`, `grad_norm`, `step`, `global_epoch`.
        intended: the schedule the run was meant to follow; None skips the schedule checks.
        events: our run's events.jsonl; each `changes` takes effect after its global_epoch.
        steps_per_epoch: when given with `step`, the applied lr is compared at
            step / steps_per_epoch exactly instead of trying the usual logging alignments.

    Returns:
        The findings; `healthy` (beside any info findings) when nothing is wrong.
    """
    points = _points(history)
    if not points:
        return [_finding("no_data", "info", "The history has no records: nothing to judge.",
                         {"records": 0}, "", 1.0)]
    events = [e for e in events if isinstance(e, Mapping)]
    intents = _intents(points, intended, events) if intended is not None else None
    lrs = [p.lr for p in points if p.lr is not None and math.isfinite(p.lr) and p.lr > 0]
    mismatch = _check_schedule(points, intents, steps_per_epoch) if intents else None
    trusted = mismatch is not None and intended is not None and not _weak(intended)
    ctx = _Context(points, intents, max(lrs) if lrs else None,
                   mismatch.evidence["pattern"] if trusted and mismatch else None)
    if mismatch is not None and intended is not None:
        mismatch = _with_assumptions(mismatch, intended)
    findings = [f for f in (mismatch, _check_nonfinite(ctx), _check_smoothing(ctx)) if f]
    segments = _segments(points, events)
    findings += _check_losses(ctx, segments)
    findings += [f for f in (_check_collapse(history, segments, intended, ctx),) if f]
    if not any(f.code == "lr_too_high" for f in findings):
        classes = intended.num_classes if intended is not None else ARC_CLASSES
        findings += [f for f in (_check_above_chance(ctx, classes),) if f]
    findings += _check_events(events, ctx)
    if all(f.severity == "info" for f in findings):
        findings.append(_healthy(ctx))
    return _ordered(findings)


def _ordered(findings: Sequence[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: -f.likelihood)


def _points(history: Sequence[Mapping[str, Any]]) -> list[_Point]:
    points = []
    for i, record in enumerate(history):
        epoch = _value(record, i, "epoch")
        global_epoch = _value(record, i, "global_epoch")
        points.append(_Point(
            i, float(i) if epoch is None else epoch,
            float(i + 1) if global_epoch is None else global_epoch,
            _value(record, i, "step"), _value(record, i, "train_loss", "loss"),
            _value(record, i, "val_loss"), _value(record, i, "lr", "learning_rate"),
            _value(record, i, "grad_norm"), global_epoch is not None))
    return points


def _value(record: Mapping[str, Any], index: int, key: str, alias: str = "") -> float | None:
    raw = record.get(key)
    if raw is None and alias:
        raw = record.get(alias)
    try:
        return _number(raw)
    except (ValueError, OverflowError):
        raise ConfigError(f"history record {index}: {key} is {raw!r}, not a number.") from None


def _event_epoch(event: Mapping[str, Any]) -> float | None:
    try:
        return _number(event.get("global_epoch"))
    except (ValueError, OverflowError):
        return None


def _intents(points: Sequence[_Point], intended: Intended,
             events: Sequence[Mapping[str, Any]]) -> list[tuple[Intended, ...]]:
    """The schedule in force at each point; a point at an event's epoch may have either."""
    timeline: list[tuple[float, Intended]] = []
    current = intended
    changes = [(g, e["changes"]) for e in events
               if isinstance(e.get("changes"), Mapping) and e["changes"]
               and (g := _event_epoch(e)) is not None]
    for g, change in sorted(changes, key=lambda item: item[0]):
        current = current.with_changes(change)
        timeline.append((g, current))
    out = []
    for p in points:
        before = intended
        at = []
        for g, state in timeline:
            if g < p.global_epoch:
                before = state
            elif g == p.global_epoch:
                at.append(state)
        out.append((before, *at))
    return out


def _segments(points: Sequence[_Point], events: Sequence[Mapping[str, Any]]
              ) -> list[list[_Point]]:
    """The history cut where it goes back (a rollback): each piece is one line of training."""
    rollbacks = {g for e in events
                 if e.get("rolled_back_to") is not None and (g := _event_epoch(e)) is not None}
    segments: list[list[_Point]] = [[points[0]]]
    for previous, point in zip(points, points[1:]):
        if previous.step is not None and point.step is not None:
            back = point.step <= previous.step
        else:
            back = point.epoch < previous.epoch
        if back or previous.global_epoch in rollbacks:
            segments.append([])
        segments[-1].append(point)
    return segments


def _finite_prefix(segment: Sequence[_Point]) -> tuple[list[_Point], bool]:
    """The points before the first non-finite loss, and whether one cut the segment."""
    for i, p in enumerate(segment):
        if any(v is not None and not math.isfinite(v) for v in (p.train_loss, p.val_loss)):
            return list(segment[:i]), True
    return list(segment), False


# --------------------------------------------------------------------- the schedule check


@dataclass(frozen=True)
class _LrRow:
    point: _Point
    position: float  # the (fractional) epoch of training the lr was applied at
    intended: Intended
    expected: float
    applied: float

    @property
    def deviation(self) -> float:
        return (self.applied - self.expected) / self.intended.learning_rate

    @property
    def ratio(self) -> float:
        return self.applied / self.expected if self.expected > 0 else math.inf

    @property
    def off(self) -> bool:
        if abs(self.deviation) <= LR_TOLERANCE:
            return False
        ratio = self.ratio
        return not 0 < ratio < math.inf or abs(math.log(ratio)) > math.log(LR_RATIO_TOLERANCE)


_Position = Callable[[_Point], float]


def _alignments(points: Sequence[_Point], steps_per_epoch: int | None
                ) -> list[tuple[str, _Position]]:
    """Where in training each record's lr may have been taken: logs differ in convention."""
    have_steps = all(p.step is not None for p in points)
    if steps_per_epoch and have_steps:
        return [("step", lambda p: (p.step or 0.0) / steps_per_epoch)]
    out: list[tuple[str, _Position]] = [
        ("epoch", lambda p: p.epoch),  # 0-based labels, lr at the start of the epoch
        ("epoch+1", lambda p: p.epoch + 1),  # 0-based labels, lr at the end
        ("epoch-1", lambda p: p.epoch - 1),  # 1-based labels, lr at the start
    ]
    spe = _estimate_steps_per_epoch(points) if have_steps else None
    if spe:
        out += [("step", lambda p: (p.step or 0.0) / spe),
                ("step+1", lambda p: ((p.step or 0.0) + 1) / spe)]
    return out


def _estimate_steps_per_epoch(points: Sequence[_Point]) -> float | None:
    steps = [(p.epoch, p.step or 0.0) for p in points]
    ratios = [(s1 - s0) / (e1 - e0) for (e0, s0), (e1, s1) in zip(steps, steps[1:])
              if e1 > e0 and s1 > s0]
    return statistics.median(ratios) if ratios else None


def _lr_rows(points: Sequence[_Point], intents: Sequence[tuple[Intended, ...]],
             position: _Position) -> list[_LrRow]:
    rows = []
    for p in points:
        at = position(p)
        options = [_LrRow(p, at, it, it.lr_at_epoch(at), p.lr or 0.0)
                   for it in intents[p.index]]
        rows.append(min(options, key=lambda r: abs(r.deviation)))
    return rows


def _check_schedule(points: Sequence[_Point], intents: Sequence[tuple[Intended, ...]],
                    steps_per_epoch: int | None) -> Finding | None:
    judged = [p for p in points if p.lr is not None and math.isfinite(p.lr)]
    if not judged:
        return None
    alignment, rows = _best_alignment(judged, intents, steps_per_epoch)
    if not _is_mismatch(rows):
        return None
    return _mismatch_finding(rows, [r for r in rows if r.off], alignment)


def _best_alignment(points: Sequence[_Point], intents: Sequence[tuple[Intended, ...]],
                    steps_per_epoch: int | None) -> tuple[str, list[_LrRow]]:
    candidates = [(name, _lr_rows(points, intents, position))
                  for name, position in _alignments(points, steps_per_epoch)]
    return min(candidates, key=lambda c: _fit(c[1]))


def _warmup_fit(points: Sequence[_Point], intended: Intended) -> tuple[int, float]:
    """Records off, then mean deviation, of `intended` under its best alignment."""
    judged = [p for p in points if p.lr is not None and math.isfinite(p.lr)]
    rows = _best_alignment(judged, [(intended,)] * len(points), None)[1]
    return sum(r.off for r in rows), statistics.fmean(abs(r.deviation) for r in rows)


def _is_mismatch(rows: Sequence[_LrRow]) -> bool:
    off = sum(r.off for r in rows)
    return off >= 2 and off >= MISMATCH_SHARE * len(rows)


def _fit(rows: Sequence[_LrRow]) -> tuple[bool, float, float, float]:
    """How well an alignment explains the applied lr (smaller is better).

    An alignment under which the trace follows the schedule wins. When none does: the one
    whose warmup matches best (a bug after warmup leaves the warmup intact), then the one
    with the steadiest applied/intended ratio after warmup (a schedule scaled by a
    constant is aligned when the ratio is constant), then the smallest deviation.
    """
    deviation = statistics.fmean(min(abs(r.deviation), 1.0) for r in rows)
    if not _is_mismatch(rows):
        return False, 0.0, 0.0, deviation
    warmup = [r for r in rows if r.position < r.intended.warmup_epochs]
    warmup_off = sum(r.off for r in warmup) / len(warmup) if warmup else 0.0
    logs = [math.log(r.ratio) for r in _after_warmup(rows) if 0 < r.ratio < math.inf]
    steadiness = statistics.pstdev(logs) if len(logs) > 1 else 0.0
    return True, round(warmup_off, 6), round(steadiness, 6), deviation


def _after_warmup(rows: Sequence[_LrRow]) -> list[_LrRow]:
    return [r for r in rows if r.position >= r.intended.warmup_epochs] or list(rows)


def _spread(items: Sequence[Any], n: int) -> list[Any]:
    """Up to `n` items evenly spread over `items`, first and last included."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)]


def _mismatch_pattern(rows: Sequence[_LrRow], post: Sequence[_LrRow]) -> str:
    applied = [r.applied for r in post]
    expected = [r.expected for r in post]
    decays = min(expected) < 0.8 * max(expected)
    flat = max(applied) > 0 and max(applied) - min(applied) <= 0.05 * max(applied)
    if decays and flat and len(post) >= 3:
        return "flat_after_warmup"
    ratios = [r.ratio for r in post[len(post) // 2:] if math.isfinite(r.ratio)]
    median = statistics.median(ratios) if ratios else 1.0
    first_off = next(i for i, r in enumerate(rows) if r.off)
    if first_off >= 2 and median < 1 / LR_RATIO_TOLERANCE:
        return "lowered_midway"
    if median <= 0.5:
        return "compounded"
    if median >= 2.0:
        return "too_high"
    return "departs"


def _mismatch_finding(rows: Sequence[_LrRow], bad: Sequence[_LrRow], alignment: str
                      ) -> Finding:
    post = _after_warmup(rows)
    pattern = _mismatch_pattern(rows, post)
    first, last = post[0], post[-1]
    ratios = [r.ratio for r in post[len(post) // 2:] if math.isfinite(r.ratio)]
    median = statistics.median(ratios) if ratios else math.nan
    it = rows[0].intended
    samples = [{"epoch": r.point.epoch, "intended": r.expected, "applied": r.applied,
                "ratio": r.ratio} for r in _spread(post, 5)]
    evidence = {
        "pattern": pattern, "alignment": alignment, "records_checked": len(rows),
        "records_off": len(bad), "first_off_epoch": bad[0].point.epoch,
        "median_ratio_late": median, "ratio_at_end": last.ratio, "samples": samples,
        "intended": {k: getattr(it, k) for k in _INTENDED_KEYS if k != "label_smoothing"},
    }
    where = (f"at epoch {_e(last)} intended {_sci(last.expected)}, applied "
             f"{_sci(last.applied)}")
    planned = (f"the intended {it.schedule} schedule (peak {_sci(it.learning_rate)}, warmup "
               f"{_count(it.warmup_epochs, 'epoch')}, {_count(it.epochs, 'epoch')})")
    if pattern == "flat_after_warmup":
        level = statistics.median(r.applied for r in post)
        at_peak = abs(level - last.intended.learning_rate) <= 0.05 * last.intended.learning_rate
        message = (
            f"After warmup the applied learning rate stays flat at {_sci(level)}"
            f"{' (the peak)' if at_peak else ''} from epoch {_e(first)} to {_e(last)} over "
            f"{len(post)} records, while {planned} decays it to {_sci(last.expected)} "
            f"({where}: {last.ratio:.1f}x the intended). This is the classic bug of warmup "
            f"code that sets param_group['lr'] every step and so overwrites the scheduler: "
            f"the decay never happens, the late epochs run at the peak learning rate, and "
            f"the loss cannot settle.")
        fix = (f"remove the warmup code that writes param_group['lr'] every step; compute the "
               f"lr in one place as warmup multiplier x decay of the step (one LambdaLR, or "
               f"SequentialLR of LinearLR and CosineAnnealingLR), so that epoch {_e(last)} "
               f"runs at {_sci(last.expected)} instead of {_sci(last.applied)}.")
    elif pattern == "lowered_midway":
        off = bad[0]
        before = rows[rows.index(off) - 1]
        message = (
            f"The applied learning rate follows {planned} until epoch {_e(before)}, "
            f"then drops below it from epoch {_e(off)} on (intended {_sci(off.expected)}, "
            f"applied {_sci(off.applied)}; a median {median:.2g}x the intended later, {where}). "
            f"Something lowered the learning rate partway that the schedule does not know "
            f"about: a plateau scheduler, a manual change at a resume, or a recovery whose "
            f"event was not recorded.")
        fix = (f"if the drop was meant, judge the later epochs against the lowered peak (keep "
               f"events.jsonl with the run, or pass --lr); if not, find what wrote "
               f"param_group['lr'] at epoch {_e(off)}.")
    elif pattern == "compounded":
        message = (
            f"The applied learning rate settles far below {planned}: after warmup it is a "
            f"median {median:.2g}x the intended ({where}). This is the pattern of a manual "
            f"warmup multiplied into a chainable scheduler (param_group['lr'] *= factor "
            f"beside a scheduler that updates the current lr recursively, e.g. "
            f"CosineAnnealingLR or ExponentialLR in chained form): each scheduler update "
            f"compounds the lowered value, so the run trains about {1 / median:.0f}x slower "
            f"than planned and looks stuck.")
        fix = (f"drop the manual warmup multiplication, or fold warmup x decay into one "
               f"LambdaLR (or SequentialLR) that sets the lr from the step number; epoch "
               f"{_e(last)} should run at {_sci(last.expected)}, not {_sci(last.applied)}.")
    elif pattern == "too_high":
        message = (
            f"The applied learning rate is a median {median:.2g}x {planned} after warmup "
            f"({where}): something scales the learning rate beyond what was meant, so every "
            f"step is larger than planned.")
        fix = (f"find what scales the lr (a second scheduler, a batch-size or world-size "
               f"scaling, a peak set in two places) and make epoch {_e(last)} run at "
               f"{_sci(last.expected)}.")
    else:
        off = bad[0]
        message = (
            f"The applied learning rate departs from {planned} in {len(bad)} of {len(rows)} "
            f"records, first at epoch {_e(off)} (intended {_sci(off.expected)}, applied "
            f"{_sci(off.applied)}; {where}): the run did not train with the schedule it "
            f"was meant to, so its losses say little about that schedule.")
        fix = (f"make the lr one function of the step (warmup x {it.schedule} decay) written "
               f"in one place, and check the intended values (--lr, --warmup-epochs, "
               f"--schedule, --epochs); epoch {_e(off)} should run at {_sci(off.expected)}.")
    likelihood = None if pattern != "departs" else 0.9
    return _finding("lr_schedule_mismatch", "error", message, evidence, fix, likelihood)


# ------------------------------------------------------------------------ the loss checks


def _check_nonfinite(ctx: _Context) -> Finding | None:
    names = {"train_loss": "training loss", "val_loss": "validation loss",
             "grad_norm": "gradient norm"}
    for i, p in enumerate(ctx.points):
        bad = [(key, v) for key in names if (v := getattr(p, key)) is not None
               and not math.isfinite(v)]
        if not bad:
            continue
        key, value = bad[0]
        earlier = [q for q in ctx.points[:i] if q.train_loss is not None
                   and math.isfinite(q.train_loss)]
        lr = p.lr if p.lr is not None and math.isfinite(p.lr) else None
        fraction = ctx.lr_fraction(lr)
        at = f"epoch {_ep(p)}" + (f" (step {p.step:g})" if p.step is not None else "")
        message = (f"The {names[key]} became {value} at {at}"
                   + (f", with the learning rate at {_sci(lr)}" if lr is not None else "")
                   + (f" ({fraction:.0%} of its peak)" if fraction is not None else "")
                   + (f"; the last finite training loss was {earlier[-1].train_loss:.4g} at "
                      f"epoch {_ep(earlier[-1])}" if earlier else "")
                   + ". Every update after a non-finite loss or gradient corrupts the weights, "
                   "so what follows is not training.")
        base = ctx.base_lr(p)
        if fraction is not None and fraction >= NEAR_PEAK and base is not None:
            fix = (f"set learning_rate to {_sci(base / 3, 2)} (1/3 of {_sci(base, 2)}), keep "
                   f"grad_clip on (e.g. 1.0), and resume from a checkpoint before {at}.")
        else:
            fix = (f"the learning rate was not at its peak, so look at the batches around "
                   f"{at} (skip_batches) and at the numerics (fp16 overflow: use bf16 or a "
                   f"GradScaler); keep grad_clip on and resume from a checkpoint before it.")
        evidence = {"epoch": p.epoch, "step": p.step, "key": key, "value": value, "lr": lr,
                    "lr_fraction_of_peak": fraction,
                    "last_finite_train_loss": earlier[-1].train_loss if earlier else None,
                    "last_finite_epoch": earlier[-1].epoch if earlier else None}
        return _finding("nonfinite_loss", "error", message, evidence, fix)
    return None


def _check_smoothing(ctx: _Context) -> Finding | None:
    if ctx.intents is None:
        return None
    on = [(p, its[0]) for p, its in zip(ctx.points, ctx.intents) if its[0].label_smoothing > 0]
    if not on:
        return None
    eps = max(it.label_smoothing for _, it in on)
    k = on[0][1].num_classes
    floor = smoothing_floor(eps, k)
    losses = [p.train_loss for p, _ in on if p.train_loss is not None
              and math.isfinite(p.train_loss)]
    vals = [p.val_loss for p in ctx.points if p.val_loss is not None
            and math.isfinite(p.val_loss)]
    low = min(losses) if losses else None
    message = (f"Label smoothing {eps:g} over {k} classes raises the floor of the training "
               f"loss: smoothed cross-entropy cannot fall below {floor:.3f} (the entropy of "
               f"the smoothed target)")
    if low is not None:
        message += f", and the lowest training loss here is {low:.3f} ({low - floor:.3f} above it)"
    message += (". The training loss is therefore not comparable with a validation loss "
                "computed without smoothing, nor with runs that use another smoothing, and a "
                f"training loss that flattens near {floor:.3f} is not a stall.")
    if vals:
        message += f" The validation loss (no smoothing) reached {min(vals):.3f}."
    if len(on) < len(ctx.points):
        message += f" Smoothing was off for {len(ctx.points) - len(on)} of the records."
    fix = (f"compare runs and pick checkpoints on val_loss (no smoothing); read the training "
           f"loss as {floor:.3f} + the reported excess; if the model has not learned anything "
           f"yet, set label_smoothing to 0.0 until it has.")
    evidence = {"label_smoothing": eps, "num_classes": k, "floor": floor,
                "min_train_loss": low, "excess": None if low is None else low - floor,
                "min_val_loss": min(vals) if vals else None}
    return _finding("smoothing_floor", "warning", message, evidence, fix)


@dataclass(frozen=True)
class _Episode:
    """A stretch of the training loss that rose (or oscillated) against its best."""

    kind: str  # "rise" | "oscillation"
    series: list[tuple[_Point, float]]
    best: int
    start: int
    end: int

    @property
    def stretch(self) -> list[tuple[_Point, float]]:
        return self.series[self.start:self.end + 1]

    @property
    def lr(self) -> float | None:
        lrs = [p.lr for p, _ in self.stretch if p.lr is not None and math.isfinite(p.lr)]
        return max(lrs) if lrs else None


def _smooth(values: Sequence[float]) -> list[float]:
    """A centred running median for long (per-step) logs; short ones are used as they are."""
    if len(values) < 20:
        return list(values)
    window = min(max(2 * (len(values) // 40) + 1, 3), 21)
    series = pd.Series(values).rolling(window, center=True, min_periods=1).median()
    return [float(v) for v in series]


def _find_rise(series: list[tuple[_Point, float]], need: int) -> _Episode | None:
    """The first stretch of `need` records running that stay well above the best so far."""
    values = _smooth([v for _, v in series])
    best = 0
    start: int | None = None
    for i in range(1, len(values)):
        limit = values[best] + max(RISE * abs(values[best]), 1e-8)
        if values[i] <= limit:
            start = None
            best = i if values[i] < values[best] else best
            continue
        start = i if start is None else start
        if i - start + 1 >= need:
            end = i
            while end + 1 < len(values) and values[end + 1] > limit:
                end += 1
            return _Episode("rise", series, best, start, end)
    return None


def _find_oscillation(series: list[tuple[_Point, float]], ctx: _Context) -> _Episode | None:
    """A stretch at or near the peak lr where the loss swings up and down without falling."""
    if ctx.peak_lr is None:
        return None
    near = [p.lr is not None and math.isfinite(p.lr) and p.lr >= NEAR_PEAK * ctx.peak_lr
            for p, _ in series]
    start, end, i = 0, -1, 0
    while i < len(near):
        j = i
        while j < len(near) and near[j]:
            j += 1
        if j - i > end - start + 1:
            start, end = i, j - 1
        i = j + 1
    if end - start + 1 < 6:
        return None
    values = _smooth([v for _, v in series[start:end + 1]])
    diffs = [b - a for a, b in zip(values, values[1:])]
    flips = sum(1 for a, b in zip(diffs, diffs[1:]) if a * b < 0)
    swing = statistics.fmean(abs(d) for d in diffs) / abs(statistics.fmean(values) or 1.0)
    third = len(values) // 3
    improving = min(values[-third:]) < 0.97 * min(values[:third])
    if flips < 0.6 * (len(diffs) - 1) or swing < OSCILLATION_SWING or improving:
        return None
    best = start + min(range(len(values)), key=values.__getitem__)
    return _Episode("oscillation", series, best, start, end)


def _episode_finding(episode: _Episode, ctx: _Context) -> Finding:
    best_point, best_value = episode.series[episode.best]
    peak_point, peak_value = max(episode.stretch, key=lambda item: item[1])
    start_point = episode.stretch[0][0]
    lr = episode.lr
    fraction = ctx.lr_fraction(lr)
    near = fraction is not None and fraction >= NEAR_PEAK
    base = ctx.base_lr(start_point) or lr
    evidence: dict[str, Any] = {
        "kind": episode.kind, "best_epoch": best_point.epoch, "best_train_loss": best_value,
        "start_epoch": start_point.epoch, "end_epoch": episode.stretch[-1][0].epoch,
        "peak_epoch": peak_point.epoch, "peak_train_loss": peak_value,
        "rise": peak_value / best_value - 1 if best_value > 0 else None,
        "records": len(episode.stretch), "lr": lr, "lr_peak": ctx.peak_lr,
        "lr_fraction_of_peak": fraction,
        "suggested_learning_rate": base / 3 if base else None}
    grads = [p.grad_norm for p, _ in [episode.series[episode.best], *episode.stretch]
             if p.grad_norm is not None and math.isfinite(p.grad_norm)]
    if len(grads) >= 2:
        evidence["grad_norm_from"], evidence["grad_norm_to"] = grads[0], grads[-1]
    if episode.kind == "oscillation":
        low = min(v for _, v in episode.stretch)
        seen = (f"Training loss oscillated between {low:.3g} and {peak_value:.3g} over "
                f"{len(episode.stretch)} records (epochs {_ep(start_point)} to "
                f"{_ep(episode.stretch[-1][0])}) without improving")
    else:
        seen = (f"Training loss rose from {best_value:.3g} at epoch {_ep(best_point)} to "
                f"{peak_value:.3g} at epoch {_ep(peak_point)} "
                f"(+{100 * (evidence['rise'] or 0):.0f}%), staying above its best for "
                f"{len(episode.stretch)} records from epoch {_ep(start_point)}")
    if len(grads) >= 2 and grads[-1] > 1.5 * grads[0]:
        seen += f" (the gradient norm grew from {grads[0]:.3g} to {grads[-1]:.3g})"
    suggest = (f"set learning_rate to {_sci(base / 3, 2)} (1/3 of {_sci(base, 2)})"
               if base else "lower learning_rate to 1/3")
    if not near:
        at = (f"the learning rate was {_sci(lr)} ({fraction:.0%} of its peak)"
              if lr is not None and fraction is not None else "no learning rate was logged")
        message = (f"{seen}; {at}. The loss climbs although the learning rate is not at its "
                   f"peak: look for what changed there (data, augmentation, a recovery change, "
                   f"label smoothing) before blaming the step size.")
        fix = (f"roll back to epoch {best_point.epoch:g} (loss {best_value:.3g}) and check what "
               f"changed at epoch {_ep(start_point)}; if nothing did, {suggest}.")
        return _finding("loss_increase", "warning", message, evidence, fix)
    message = (f"{seen}, while the learning rate was at or near its peak ({_sci(lr)}, "
               f"{fraction:.0%} of {_sci(ctx.peak_lr)}). A loss that climbs or bounces at the "
               f"peak learning rate means the steps are too large for this model and batch "
               f"size: the optimizer overshoots, and left alone this ends in a divergence.")
    fix = f"{suggest} and resume from epoch {best_point.epoch:g} (loss {best_value:.3g})."
    likelihood = None
    if ctx.schedule_bug in ("flat_after_warmup", "too_high"):
        message += (" The lr_schedule_mismatch finding explains why the learning rate stayed "
                    "this high, so it is the likelier cause.")
        fix = f"fix the learning-rate schedule first; if the loss still rises at the peak, {fix}"
        likelihood = _EXPLAINED_LR_TOO_HIGH
    return _finding("lr_too_high", "error", message, evidence, fix, likelihood)


CHANCE_FACTOR = 1.5  # a loss this many times a know-nothing model's is a blow-up


def _check_above_chance(ctx: _Context, num_classes: int) -> Finding | None:
    """A loss far above that of a model that knows nothing, at a high learning rate.

    Too few epochs for a rising trend (the run stopped at once) still tell: a uniform
    prediction over K classes scores ln K, and no sane update makes a model worse than that.
    """
    chance = math.log(num_classes)
    for point in ctx.points:
        worst = max((v for v in (point.train_loss, point.val_loss)
                     if v is not None and math.isfinite(v)), default=None)
        if worst is None or worst <= CHANCE_FACTOR * chance:
            continue
        fraction = ctx.lr_fraction(point.lr)
        if fraction is None or fraction < NEAR_PEAK:
            continue
        base = ctx.base_lr(point) or point.lr
        message = (f"At epoch {_ep(point)} the loss was {worst:.4g}, {worst / chance:.1f} times "
                   f"the {chance:.3g} of a model that knows nothing (a uniform guess over "
                   f"{num_classes} classes), while the learning rate was {_sci(point.lr)} "
                   f"({fraction:.0%} of its peak). Updates this large throw away what the "
                   f"model had: the learning rate is too high for this model and batch size.")
        fix = (f"set learning_rate to {_sci(base / 3, 2)} (1/3 of {_sci(base, 2)}), or "
               f"lower, and keep a warmup of at least one epoch.")
        evidence = {"epoch": point.epoch, "loss": worst, "chance_loss": chance,
                    "lr": point.lr, "lr_fraction_of_peak": fraction,
                    "suggested_learning_rate": base / 3 if base else None}
        return _finding("lr_too_high", "error", message, evidence, fix)
    return None


def _check_collapse(history: Sequence[Mapping[str, Any]], segments: Sequence[list[_Point]],
                    intended: Intended | None, ctx: _Context) -> Finding | None:
    """The validation loss sat at the level of predicting the colour frequencies only.

    Needs that level in the records (`marginal_loss`, which our runs log); the rule is the
    detector's (`autotune.detect.divergence.check_collapse`), applied along each timeline.
    """
    warmup = intended.warmup_epochs if intended is not None else 0.0
    for segment in segments:
        records: list[dict[str, float]] = []
        for point in segment:
            marginal = _number(history[point.index].get("marginal_loss"))
            val = point.val_loss if point.val_loss is not None else math.nan
            train = point.train_loss if point.train_loss is not None else math.nan
            records.append({"epoch": point.epoch, "val_loss": val, "train_loss": train})
            if marginal is None:
                continue
            level = _number(history[point.index].get("train_marginal_loss"))
            verdict = check_collapse(records, DetectorConfig(
                marginal_loss=marginal, train_marginal_loss=level, warmup_epochs=warmup))
            if verdict:
                return _collapse_finding(verdict, point, ctx.base_lr(point) or point.lr)
    return None


_CLIP_ON = "gradient clipping on (grad_clip: 1.0) if it was off"


def _collapse_finding(verdict: Any, point: _Point, lr: float | None) -> Finding:
    message = (f"{verdict.message} The peak learning rate was {_sci(lr)}: too high a rate drives "
               f"the model onto that trivial answer (mostly the background colour) and keeps "
               f"it there, so the loss neither rises nor falls.")
    fix = ("train again from the start (a collapsed model does not come back when the rate "
           "is lowered) with learning_rate " + (f"{_sci(lr / 3, 2)} (1/3 of {_sci(lr, 2)})"
                                                 if lr else "x 1/3") +
           f" and {_CLIP_ON}; if it collapses again, a tenth of that.")
    evidence = {**verdict.evidence, "epoch": point.epoch, "peak_lr": lr,
                "suggested_learning_rate": lr / 3 if lr else None}
    return _finding("collapsed", "error", message, evidence, fix)


@dataclass(frozen=True)
class _Spike:
    point: _Point
    value: float
    mean: float
    after: float | None  # the next record's loss

    @property
    def ratio(self) -> float:
        return self.value / self.mean


def _find_spikes(series: list[tuple[_Point, float]]) -> list[_Spike]:
    values = [v for _, v in series]
    spikes = []
    for i in range(3, len(values)):
        window = values[max(0, i - SPIKE_WINDOW):i]
        mean = statistics.fmean(window)
        if mean <= 0:
            continue
        spread = max(statistics.pstdev(window), 0.02 * mean)
        if values[i] >= SPIKE_RATIO * mean and values[i] - mean >= SPIKE_SIGMAS * spread:
            after = values[i + 1] if i + 1 < len(values) else None
            spikes.append(_Spike(series[i][0], values[i], mean, after))
    return spikes


def _spike_finding(spikes: Sequence[_Spike], ctx: _Context) -> Finding:
    top = max(spikes, key=lambda s: s.ratio)
    p = top.point
    at = f"epoch {_ep(p)}" + (f" (step {p.step:g})" if p.step is not None else "")
    fell_back = top.after is not None and top.after < 1.2 * top.mean
    message = (f"Training loss jumped to {top.value:.3g} at {at}, {top.ratio:.1f}x its running "
               f"mean of {top.mean:.3g} over the previous {SPIKE_WINDOW} records")
    if top.after is not None:
        message += (f", and fell back to {top.after:.3g} at the next record" if fell_back
                    else f", and stayed up ({top.after:.3g}) at the next record")
    if len(spikes) > 1:
        message += f"; {len(spikes)} such spikes in all"
    message += (". A jump against the recent trend is one bad batch or one oversized step; "
                "it can knock the weights into a worse region or, repeated, into divergence.")
    fraction = ctx.lr_fraction(p.lr)
    fix = (f"skip the batches around {at} (skip_batches) and tighten grad_clip (e.g. 0.5) so "
           f"one batch cannot move the weights that far")
    base = ctx.base_lr(p)
    if (len(spikes) > 1 or not fell_back) and fraction is not None and fraction >= NEAR_PEAK \
            and base:
        fix += f"; spikes that recur at the peak call for learning_rate {_sci(base / 3, 2)}"
    evidence = {"epoch": p.epoch, "step": p.step, "value": top.value,
                "running_mean": top.mean, "ratio": top.ratio, "window": SPIKE_WINDOW,
                "next_value": top.after, "lr": p.lr, "count": len(spikes),
                "epochs": [s.point.epoch for s in spikes[:10]]}
    return _finding("loss_spike", "warning", message, evidence, fix + ".")


def _train_at(points: Sequence[_Point], point: _Point) -> float | None:
    """The training loss at `point`, or the last one logged before it."""
    for p in reversed(points[:points.index(point) + 1]):
        if p.train_loss is not None:
            return p.train_loss
    return None


def _check_val(points: Sequence[_Point], rising_train: bool) -> Finding | None:
    """Validation loss rising after its best: overfitting if the training loss still falls."""
    val = [(p, p.val_loss) for p in points if p.val_loss is not None]
    values = [v for _, v in val]
    if len(values) < OVERFIT_RECORDS + 1:
        return None
    b = min(range(len(values)), key=values.__getitem__)
    after = values[b:]
    rises = sum(1 for x, y in zip(after, after[1:]) if y > x)
    if (len(after) - 1 < OVERFIT_RECORDS or after[-1] < after[0] * (1 + OVERFIT_RISE)
            or rises < math.ceil(0.6 * (len(after) - 1))):
        return None
    best_point, last_point = val[b][0], val[-1][0]
    train_best, train_last = _train_at(points, best_point), _train_at(points, last_point)
    evidence = {"best_epoch": best_point.epoch, "best_val_loss": after[0],
                "last_epoch": last_point.epoch, "last_val_loss": after[-1],
                "records_rising": len(after) - 1, "train_loss_at_best": train_best,
                "train_loss_at_last": train_last}
    stretch = (f"validation loss rose from {after[0]:.3g} at epoch {_ep(best_point)} to "
               f"{after[-1]:.3g} at epoch {_ep(last_point)} ({len(after) - 1} records)")
    if train_best is not None and train_last is not None and train_last < 0.98 * train_best:
        message = (f"The {stretch} while the training loss kept falling ({train_best:.3g} to "
                   f"{train_last:.3g}): the model is memorising the training pairs rather "
                   f"than learning the transformations, which is overfitting, not an "
                   f"unstable optimizer; lowering the learning rate will not cure it.")
        fix = (f"turn augmentation on (use_augmentation: true), add more data, or stop at the "
               f"best epoch {best_point.epoch:g} (val_loss {after[0]:.3g}).")
        return _finding("overfitting", "warning", message, evidence, fix)
    if rising_train:
        return None  # the training-loss finding already tells this story
    message = (f"The {stretch} while the training loss did not fall "
               f"({_g(train_best)} to {_g(train_last)}): the model is getting worse on both, "
               f"which points at instability rather than overfitting.")
    fix = (f"roll back to epoch {best_point.epoch:g} (val_loss {after[0]:.3g}) and lower the "
           f"learning_rate to 1/3, or lengthen warmup_epochs.")
    return _finding("loss_increase", "warning", message, evidence, fix)


def _check_losses(ctx: _Context, segments: Sequence[list[_Point]]) -> list[Finding]:
    found: list[Finding] = []
    spikes: list[_Spike] = []
    for segment in segments:
        points, cut = _finite_prefix(segment)
        series = [(p, p.train_loss) for p in points if p.train_loss is not None]
        episode = _find_rise(series, 2 if cut else 3) or _find_oscillation(series, ctx)
        if episode is not None:
            found.append(_episode_finding(episode, ctx))
        spikes += _find_spikes(series)
        val = _check_val(points, episode is not None)
        if val is not None:
            found.append(val)
    if spikes:
        found.append(_spike_finding(spikes, ctx))
    seen: set[str] = set()
    first = []
    for f in found:
        if f.code not in seen:
            seen.add(f.code)
            first.append(f)
    return first


# ----------------------------------------------------------------------------- the events


def _describe_changes(changes: Any) -> str:
    if not isinstance(changes, Mapping) or not changes:
        return "changed nothing"
    parts = []
    for key, change in changes.items():
        if isinstance(change, (list, tuple)) and len(change) == 2:
            parts.append(f"{key} {_show(change[0])} -> {_show(change[1])}")
        else:
            parts.append(f"{key} -> {_show(change)}")
    return "changed " + ", ".join(parts)


def _check_events(events: Sequence[Mapping[str, Any]], ctx: _Context) -> list[Finding]:
    """A summary of the recoveries, and what gave up or was left diverged."""
    findings: list[Finding] = []
    pending: list[Mapping[str, Any]] = []
    recoveries: list[dict[str, Any]] = []
    effective: dict[str, Any] = {}
    for event in events:
        kind = event.get("kind")
        if kind == "diverged":
            pending.append(event)
        elif kind == "recovered":
            reason = event.get("reason") or (pending[-1].get("reason") if pending else None)
            pending.clear()
            changes = event.get("changes") if isinstance(event.get("changes"), Mapping) else {}
            effective.update({k: _new_value(v) for k, v in changes.items()})
            recoveries.append({"global_epoch": event.get("global_epoch"), "reason": reason,
                               "rolled_back_to": event.get("rolled_back_to"),
                               "changes": changes})
        elif kind == "gave_up":
            pending.clear()
            findings.append(_stopped_finding("gave_up", event, len(recoveries), effective, ctx))
    if recoveries:
        findings.append(_recovered_finding(recoveries, effective))
    findings += [_stopped_finding("diverged", e, len(recoveries), effective, ctx)
                 for e in pending]
    return findings


def _recovered_finding(recoveries: Sequence[Mapping[str, Any]], effective: Mapping[str, Any]
                       ) -> Finding:
    parts = []
    for r in recoveries:
        back = (f"rolled back to epoch {r['rolled_back_to']} and "
                if r["rolled_back_to"] is not None else "")
        parts.append(f"at global epoch {r['global_epoch']} ({r['reason']}) it {back}"
                     f"{_describe_changes(r['changes'])}")
    now = ", ".join(f"{k}: {_show(v)}" for k, v in effective.items()) or "unchanged"
    message = (f"The run diverged and recovered {_count(len(recoveries), 'time')}: "
               f"{'; '.join(parts)}. "
               f"Metrics logged before each rollback belong to an abandoned branch; the "
               f"configuration in force now has {now}.")
    fix = ("nothing to do for this run; start new runs from its effective_config.yaml "
           f"({now}) so that they do not diverge the same way.")
    evidence = {"recoveries": len(recoveries), "events": list(recoveries),
                "effective_changes": dict(effective)}
    return _finding("recovered", "info", message, evidence, fix)


def _stopped_finding(code: str, event: Mapping[str, Any], recoveries: int,
                     effective: Mapping[str, Any], ctx: _Context) -> Finding:
    """A run that gave up (recovery budget spent) or diverged with recovery off."""
    reason = event.get("reason")
    where = f"global epoch {event.get('global_epoch')}"
    if event.get("step") is not None:
        where += f", step {event.get('step')}"
    if code == "gave_up":
        message = (f"The run gave up at {where}: it diverged again ({reason}) after "
                   f"{_count(recoveries, 'recovery', 'recoveries')}, so the recovery budget "
                   f"was spent and training stopped.")
        then = "or raise max_recoveries"
    else:
        message = (f"The run diverged at {where} ({reason}) and was not recovered (recovery "
                   f"off, or the run stopped there).")
        then = "or resume it with recovery on (autotune resume RUN_DIR)"
    lr = effective.get("learning_rate")
    base = lr if isinstance(lr, (int, float)) and lr > 0 else ctx.base_lr(ctx.points[-1])
    if reason == "collapsed" and base:
        fix = (f"train again from the start with learning_rate {_sci(base / 3, 2)} (1/3 of "
               f"{_sci(base, 2)}) and {_CLIP_ON}, {then}.")
    elif reason == "overfitting":
        fix = (f"turn augmentation on (use_augmentation: true), add data, or stop at the best "
               f"epoch; {then}.")
    elif base:
        fix = (f"train again from effective_config.yaml with learning_rate "
               f"{_sci(base / 3, 2)} (1/3 of {_sci(base, 2)}) and a longer warmup_epochs, "
               f"{then}.")
    else:
        fix = f"train again with learning_rate x 1/3 and a longer warmup_epochs, {then}."
    evidence = {"global_epoch": event.get("global_epoch"), "step": event.get("step"),
                "reason": reason, "recoveries": recoveries, "detail": event.get("message"),
                "suggested_learning_rate": base / 3 if base else None}
    return _finding(code, "error", message, evidence, fix)


def _healthy(ctx: _Context) -> Finding:
    losses = [(p, p.train_loss) for p in ctx.points if p.train_loss is not None]
    vals = [(p, p.val_loss) for p in ctx.points if p.val_loss is not None]
    first, last = ctx.points[0], ctx.points[-1]
    message = f"Nothing wrong found in {len(ctx.points)} records (epochs {first.epoch:g} to " \
              f"{last.epoch:g})"
    evidence: dict[str, Any] = {"records": len(ctx.points)}
    if losses:
        message += f": training loss went from {losses[0][1]:.3g} to {losses[-1][1]:.3g}"
        evidence["train_loss_first"], evidence["train_loss_last"] = losses[0][1], losses[-1][1]
    if vals:
        best_point, best = min(vals, key=lambda item: item[1])
        message += f", validation loss reached {best:.3g} at epoch {best_point.epoch:g}"
        evidence["best_val_loss"], evidence["best_epoch"] = best, best_point.epoch
    if ctx.intents is not None:
        message += ", and the learning rate followed the intended schedule"
    return _finding("healthy", "info", message + ".", evidence, "", 1.0)


# ------------------------------------------------------------------------------ formatting


def _sci(x: float | None, digits: int = 3) -> str:
    """A learning rate the way people write one: 1e-3, 3.3e-4."""
    if x is None:
        return "n/a"
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10**exponent, digits - 1)
    if abs(mantissa) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def _count(n: float, word: str, plural: str = "") -> str:
    return f"{n:g} {word if n == 1 else plural or word + 's'}"


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _e(row: _LrRow) -> str:
    return _ep(row.point)


def _ep(point: _Point) -> str:
    """An epoch label; with the global epoch when a rollback made the two differ."""
    if point.global_logged and point.global_epoch != point.epoch:
        return f"{point.epoch:g} (global epoch {point.global_epoch:g})"
    return f"{point.epoch:g}"


def _show(value: Any) -> str:
    if isinstance(value, float) and value != 0 and abs(value) < 1e-2:
        return _sci(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
