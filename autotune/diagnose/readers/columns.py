"""What every reader returns (`Log`), the one alias table of column names, and numbers.

A reader finds the log's column names; `resolve` maps them onto ours (`epoch`, `step`,
`train_loss`, `val_loss`, `lr`, `grad_norm`) through `ALIASES` and a few patterns (named
losses such as `train/nll_loss` or `eval_<set>_loss`, LearningRateMonitor's `lr-<optimizer>`),
after the user's own `--column NAME=THEIR_NAME` mappings.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autotune.errors import ConfigError, excerpt

__all__ = ["ALIASES", "COLUMNS", "Log", "classify", "merge_rows", "normalise", "number",
           "records_of", "resolve", "words"]

COLUMNS = ("epoch", "step", "train_loss", "val_loss", "lr", "grad_norm", "train_acc",
           "val_acc")

# Normalised names (see `normalise`), the most usual first: the first found wins.
ALIASES: Mapping[str, tuple[str, ...]] = {
    "epoch": ("epoch", "epochs", "ep"),
    "step": ("step", "global_step", "steps", "iteration", "iter", "it", "trainer_global_step"),
    "train_loss": ("train_loss", "loss", "training_loss", "trainloss", "train_loss_step",
                   "loss_step", "train_loss_epoch", "loss_epoch", "tr_loss", "avg_loss",
                   "train_avg_loss", "train_loss_avg"),
    "val_loss": ("val_loss", "valid_loss", "validation_loss", "valloss", "validloss",
                 "eval_loss", "val_loss_epoch", "dev_loss", "val_avg_loss"),
    "lr": ("lr", "learning_rate", "learningrate", "train_lr", "train_learning_rate",
           "optimizer_lr"),
    "grad_norm": ("grad_norm", "gradient_norm", "gradnorm", "train_grad_norm",
                  "grad_norm_total", "grad_2_0_norm_total"),
    "train_acc": ("train_acc", "acc", "accuracy", "train_accuracy", "training_accuracy",
                  "train_acc_epoch", "acc_epoch"),
    "val_acc": ("val_acc", "val_accuracy", "valid_acc", "validation_accuracy", "eval_accuracy",
                "eval_acc", "val_acc_epoch", "dev_acc"),
}
# Names as people write them, by their words (`Loss/Train_Epoch`, `Train Loss`, `eval/loss`,
# `TrainLoss`): which split, which metric; the other words (epoch, step, avg, mean ...)
# do not change what it is.
_SPLIT_WORDS = {"train": "train", "training": "train", "tr": "train", "trn": "train",
                "val": "val", "valid": "val", "validation": "val", "eval": "val",
                "evaluation": "val", "dev": "val"}
_METRIC_WORDS = {"loss": "loss", "nll": "loss", "xent": "loss", "ce": "loss",
                 "acc": "acc", "accuracy": "acc", "lr": "lr"}
_QUALIFIERS = {"epoch", "step", "avg", "average", "mean", "total", "running", "smooth",
               "smoothed", "per", "batch", "value", "metric", "metrics"}
_NAMED = {  # named losses, when no plain alias is there
    "train_loss": re.compile(r"^(train|training)_[a-z0-9_]*loss(_step|_epoch)?$"),
    "val_loss": re.compile(r"^(val|valid|validation|eval|dev)_[a-z0-9_]*loss(_epoch)?$"),
    "lr": re.compile(r"^lr_[a-z0-9_]+$"),  # LearningRateMonitor: lr-Adam, lr-AdamW/pg1
}
_AMBIGUOUS = ("train_loss",)  # several named training losses (a GAN): the user chooses
_SHOWN_ONLY = ("train_acc", "val_acc")  # recognised and shown in the mapping, not judged


@dataclass(frozen=True)
class Log:
    """A training log read as records with our column names, in the order written."""

    path: Path
    format: str
    """`run`, `csv`, `jsonl`, `lightning`, `keras`, `huggingface`, `tensorboard`, `text`."""
    records: list[dict[str, float]]
    columns: dict[str, str] = field(default_factory=dict)
    """Our name -> the log's."""
    per_step: bool = False
    """The training loss is logged every step or every few steps, not once an epoch."""
    unit: str = "epoch"
    """What `epoch` counts: `step` for a log without epochs (TensorBoard)."""
    planned_epochs: int | None = None
    """The epochs the log says were planned (`Epoch [3/30]`, num_train_epochs)."""
    rows: int = 0
    """Rows read (0: not counted); more than `len(records)` when rows were pooled."""
    pooled: bool = False
    """Each record pools several consecutive rows (a long log; see `readers.pool`)."""
    val_size: int | None = None
    """Examples in the validation set, where the log tells it (for the noise of val_loss)."""

    def describe(self) -> dict[str, Any]:
        """What was read and how: the format, the rows, and our name -> the log's."""
        return {"path": str(self.path), "format": self.format, "unit": self.unit,
                "rows": self.rows or len(self.records), "records": len(self.records),
                "pooled": self.pooled, "columns": dict(self.columns),
                **({"val_size": self.val_size} if self.val_size else {})}


def words(name: str) -> list[str]:
    """`Loss/Train_Epoch` -> [loss, train, epoch]; `TrainLoss` -> [train, loss]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name).strip())
    return [w for w in normalise(spaced).split("_") if w]


def classify(name: str) -> str | None:
    """Our column for a name by its words, None when they do not say: a split (train,
    val ...) and a metric (loss, acc), or the learning rate / gradient norm on their own."""
    ws = words(name)
    if "grad" in ws or "gradient" in ws:
        return "grad_norm" if "norm" in ws else None
    if ("learning" in ws and "rate" in ws) or ws[:1] == ["lr"]:
        return "lr"
    splits = {_SPLIT_WORDS[w] for w in ws if w in _SPLIT_WORDS}
    metrics = {_METRIC_WORDS[w] for w in ws if w in _METRIC_WORDS} - {"lr"}
    others = [w for w in ws if w not in _SPLIT_WORDS and w not in _METRIC_WORDS
              and w not in _QUALIFIERS]
    if len(splits) > 1 or len(metrics) != 1 or others:
        return None
    split = next(iter(splits), "train")  # a bare `loss` is the training loss
    return f"{split}_{next(iter(metrics))}"


def normalise(name: str) -> str:
    """`Train/Loss` -> `train_loss`, `lr-AdamW` -> `lr_adamw`, `ValLoss` -> `valloss`."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def resolve(names: Sequence[str], given: Mapping[str, str], path: Path) -> dict[str, str]:
    """Our column name -> the log's, for the columns found.

    Args:
        names: the log's column names, in the order they appear.
        given: `--column` mappings, our name -> the log's.
    """
    out: dict[str, str] = {}
    for ours, theirs in given.items():
        if theirs not in names:
            raise ConfigError(f"{path}: --column {ours}={theirs}: no column {excerpt(theirs)} "
                              f"(found: {_listed(names)}).")
        out[ours] = theirs
    by_norm: dict[str, str] = {}
    for name in names:
        by_norm.setdefault(normalise(name), name)
    taken = set(out.values())
    for ours in COLUMNS:
        if ours in out:
            continue
        exact = [by_norm[a] for a in ALIASES[ours] if a in by_norm and by_norm[a] not in taken]
        if exact:
            out[ours] = exact[0]
            taken.add(exact[0])
            continue
        pattern = _NAMED.get(ours)
        named = [n for n in names if pattern and pattern.match(normalise(n)) and n not in taken]
        if not named:
            named = [n for n in names if classify(n) == ours and n not in taken]
        if ours in _AMBIGUOUS:
            named = _one_per_loss(named)
        if len(named) > 1 and ours in _AMBIGUOUS:
            raise ConfigError(f"{path}: several training losses ({', '.join(named)}); choose "
                              f"the one to judge with --column train_loss=NAME.")
        if named:
            out[ours] = named[0]
            taken.add(named[0])
    return out


def _one_per_loss(names: list[str]) -> list[str]:
    """`x_loss_step` and `x_loss_epoch` are one loss: keep the per-step name."""
    out: list[str] = []
    stems = set()
    for n in sorted(names, key=lambda n: not normalise(n).endswith("_step")):
        stem = re.sub(r"_(step|epoch)$", "", normalise(n))
        if stem not in stems:
            stems.add(stem)
            out.append(n)
    return out


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "no columns"


def number(value: Any) -> float | None:
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


def records_of(rows: Sequence[tuple[int, Mapping[str, Any]]], path: Path,
               given: Mapping[str, str], *, keep_other: bool = False,
               names: Sequence[str] | None = None
               ) -> tuple[list[dict[str, float]], dict[str, str], list[int]]:
    """Numeric records with our column names from raw rows of (line number, row).

    A row without any loss, learning rate or gradient norm is left out. With `keep_other`
    the other numeric columns are kept under their own names (our run files). Returns
    the records, our name -> the log's, and each record's line number.
    """
    if names is None:
        seen: dict[str, None] = {}
        for _, row in rows:
            seen.update(dict.fromkeys(str(k) for k in row))
        names = list(seen)
    mapping = resolve(names, given, path)
    require(mapping, names, path)
    back = {theirs: ours for ours, theirs in mapping.items()}
    records, lines = [], []
    for line, raw in rows:
        record: dict[str, float] = {}
        for key, value in raw.items():
            ours = back.get(str(key))
            if ours in _SHOWN_ONLY:
                continue
            if ours is None and not keep_other:
                continue
            try:
                value_ = number(value)
            except (ValueError, OverflowError):
                if ours is not None:
                    raise ConfigError(f"{path}: line {line}: {ours} is {excerpt(value)}, not a "
                                      f"number (nan and inf are allowed).") from None
                continue
            if value_ is not None:
                record[ours or str(key).strip().lower()] = value_
        if not any(k in record for k in ("train_loss", "val_loss", "lr", "grad_norm")):
            continue
        records.append(record)
        lines.append(line)
    return records, mapping, lines


def require(mapping: Mapping[str, str], names: Sequence[str], path: Path) -> None:
    """ConfigError unless there is a loss and an epoch or step column."""
    for ours, what in (("train_loss", "a loss"), ("epoch", "an epoch or step")):
        if ours in mapping or (ours == "epoch" and "step" in mapping):
            continue
        if ours == "train_loss" and "val_loss" in mapping:
            continue  # a log of validation losses only is judged on those
        raise ConfigError(
            f"{path}: missing column {excerpt(ours)}; a training log needs {what} column "
            f"(found: {_listed(names)}); name yours with --column {ours}=THEIR_NAME.")


def merge_rows(records: list[dict[str, float]], key: str = "epoch") -> list[dict[str, float]]:
    """Merge consecutive rows of one `key` whose values are disjoint (train row + val row)."""
    merged: list[dict[str, float]] = []
    for record in records:
        previous = merged[-1] if merged else None
        if (previous is not None and key in record and previous.get(key) == record[key]
                and not (set(previous) & set(record)) - {"epoch", "step"}):
            merged[-1] = {**previous, **record}
            continue
        merged.append(record)
    return merged


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
