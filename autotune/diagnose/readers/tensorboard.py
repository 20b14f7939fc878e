"""TensorBoard event files (`events.out.tfevents.*`), one file or a run folder of them.

Read with `tensorboard`'s own EventAccumulator (the optional extra `autotune[tensorboard]`).
Scalar tags are matched like column names (`train/loss`, `val/loss`, `lr`,
`epoch_loss`...); their `step` is the x-axis. A scalar tag `epoch` (Lightning's
TensorBoardLogger writes one) gives each step its epoch; without it the log is judged in
steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from autotune.diagnose.readers.columns import Log, records_of
from autotune.errors import ConfigError

__all__ = ["event_files", "is_event_file", "read_tensorboard"]

INSTALL = "pip install 'autotune[tensorboard]' (or: pip install tensorboard)"


def is_event_file(path: Path) -> bool:
    if "tfevents" in path.name:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return b"brain.Event" in head


def event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "tfevents" in p.name)


def read_tensorboard(path: Path, given: Mapping[str, str]) -> Log:
    try:
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )
    except ImportError:
        raise ConfigError(f"{path} is a TensorBoard log; reading it needs tensorboard: "
                          f"{INSTALL}.") from None
    files = event_files(path) if path.is_dir() else [path]
    by_step: dict[float, dict[str, float]] = {}
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        try:
            acc.Reload()
        except Exception as exc:  # noqa: BLE001 - a corrupt file: say which and why
            raise ConfigError(f"{file} cannot be read as a TensorBoard event file: "
                              f"{type(exc).__name__}.") from None
        prefix = _prefix(file, path)
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                by_step.setdefault(float(event.step), {})[prefix + tag] = float(event.value)
    steps = sorted(by_step)
    rows = [(i + 1, {"step": s, **by_step[s]}) for i, s in enumerate(steps)]
    names = ["step", *dict.fromkeys(k for _, r in rows for k in r if k != "step")]
    records, mapping, _ = records_of(rows, path, given, names=names)
    unit = "epoch" if "epoch" in mapping else "step"
    if unit == "step":
        for record in records:
            record["epoch"] = record["step"]
    return Log(path, "tensorboard", records, mapping, per_step=True, unit=unit)


def _prefix(file: Path, root: Path) -> str:
    """Keras writes `train/` and `validation/` subfolders with the same tags in each."""
    if root.is_dir() and file.parent != root:
        return file.parent.relative_to(root).as_posix() + "/"
    return ""
