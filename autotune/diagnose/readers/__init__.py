"""Readers of training logs, one module per format, chosen by content (not by file name).

Each returns a `Log`: records with our column names (`epoch`, `step`, `train_loss`,
`val_loss`, `lr`, `grad_norm`) in the order written. `read_log` sniffs the format: a
TensorBoard event file or folder, a Hugging Face `trainer_state.json` (or an output folder
holding one), JSON Lines or a JSON array, a Lightning CSVLogger `metrics.csv` (or a
`lightning_logs` folder), a Keras CSVLogger file, our CSV, or else a text log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from autotune.diagnose.readers.columns import ALIASES, COLUMNS, Log, normalise
from autotune.diagnose.readers.huggingface import is_trainer_state, read_trainer_state
from autotune.diagnose.readers.keras import is_keras, read_keras
from autotune.diagnose.readers.lightning import is_lightning, latest_metrics, read_lightning
from autotune.diagnose.readers.rundir import RunRecord, is_run_dir, read_run
from autotune.diagnose.readers.tabular import csv_rows, read_csv, read_jsonl, read_text
from autotune.diagnose.readers.tensorboard import event_files, is_event_file, read_tensorboard
from autotune.diagnose.readers.text import read_text_log
from autotune.errors import ConfigError

__all__ = ["ALIASES", "COLUMNS", "Log", "RunRecord", "is_run_dir", "read_log", "read_run",
           "separator"]


def read_log(path: Path, columns: Mapping[str, str] | None = None) -> Log:
    """A training log of any trainer (a file, or a folder of one), as a `Log`.

    Args:
        columns: our column name -> the log's (`--column`), for names the alias table
            does not know.
    """
    path = Path(path)
    given = dict(columns or {})
    if not path.exists():
        raise ConfigError(f"{path} does not exist: give a run directory or a training log.")
    if path.is_dir():
        return _read_folder(path, given)
    if not path.is_file():  # a FIFO or a device: never opened (it may never end)
        raise ConfigError(f"{path} is not a regular file: give a run directory or a "
                          f"training log.")
    if is_event_file(path):
        return read_tensorboard(path, given)
    head = _head(path)
    if not head.strip():
        raise ConfigError(f"{path} is empty: a training log needs a loss and an epoch or "
                          f"step on each record.")
    stripped = head.lstrip()
    if stripped.startswith("{"):
        first = _first_object(stripped)
        if first is None or is_trainer_state(first):
            # One JSON document over many lines (trainer_state.json, indented).
            text = read_text(path)
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError:
                loaded = None
            if is_trainer_state(loaded):
                return read_trainer_state(path, loaded, given)
        return read_jsonl(path, given)
    if stripped.startswith("["):
        return read_jsonl(path, given)
    sep = separator(head)
    if sep is not None:
        header = [h.strip() for h in csv_rows(head.split("\n", 1)[0] + "\n", path, sep)[1]]
        if is_lightning(header):
            return read_lightning(path, read_text(path), given)
        if is_keras(header):
            return read_keras(path, given, sep)
        return read_csv(path, given, sep)
    return read_text_log(path, given)


HEAD_BYTES = 1 << 16


def _head(path: Path) -> str:
    """The first lines of a file (whole lines, up to HEAD_BYTES), for sniffing its format."""
    try:
        with path.open("rb") as f:
            raw = f.read(HEAD_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}.") from None
    if len(raw) == HEAD_BYTES and b"\n" in raw:
        raw = raw[:raw.rindex(b"\n") + 1]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} cannot be read: it is not UTF-8 text (a training log must "
                          f"be CSV, JSON, a text log or a TensorBoard event file).") from None


def _first_object(text: str) -> dict | None:
    """The first line as a JSON object, None when it is not one on its own."""
    try:
        loaded = json.loads(text.split("\n", 1)[0])
    except json.JSONDecodeError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _read_folder(path: Path, given: Mapping[str, str]) -> Log:
    if event_files(path):
        return read_tensorboard(path, given)
    metrics = latest_metrics(path)
    if metrics is not None:
        return read_lightning(metrics, read_text(metrics), given)
    states = sorted(path.glob("**/trainer_state.json"),
                    key=lambda p: (_checkpoint_step(p), str(p)))
    if states:
        state = json.loads(read_text(states[-1]))
        if is_trainer_state(state):
            return read_trainer_state(states[-1], state, given)
    raise ConfigError(f"{path} is not a run directory: it has no config.yaml and no "
                      f"metrics.jsonl, nor a training log (metrics.csv, trainer_state.json, "
                      f"TensorBoard event files) inside.")


def _checkpoint_step(path: Path) -> int:
    name = path.parent.name
    return int(name.split("-")[-1]) if name.startswith("checkpoint-") and name.split(
        "-")[-1].isdigit() else -1


def separator(text: str) -> str | None:
    """`,`, tab or `;` when the first two lines split into the same number (>= 2) of fields
    and the header has a name we know; None for anything else (a text log)."""
    lines = [line for line in text.splitlines() if line.strip()][:2]
    known = {a for names in ALIASES.values() for a in names}
    for sep in (",", "\t", ";"):
        fields = [line.split(sep) for line in lines]
        if len(fields[0]) < 2 or (len(fields) > 1 and len(fields[1]) != len(fields[0])):
            continue
        if any("=" in f or ": " in f for f in fields[0]):
            continue  # name=value or name: value pairs: a text log
        names = [normalise(f) for f in fields[0]]
        if any(n in known or n.endswith("loss") or n.startswith("lr_") for n in names):
            return sep
    return None
