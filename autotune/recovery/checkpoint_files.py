"""Checkpoints on disk: atomic, checksummed, with a completion marker; the best and last k.

A checkpoint is `g000007.pt` (the state) and `g000007.json` (the marker: sha256, size,
epochs, validation loss), named by the global epoch so that a timeline resumed after a
rollback never overwrites a file. The marker is written after the state, so a checkpoint
without one, or whose bytes do not match its checksum, is ignored with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from autotune.atomic import atomic_write, atomic_write_text
from autotune.errors import ConfigError
from trainer.userfiles import read_bytes

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MARKER_LIMIT = 64 * 1024  # a marker is a few hundred bytes


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted (bad checksum, wrong version, unsafe content)."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a completion marker says about its checkpoint."""

    global_epoch: int   # epochs of compute when it was written (never goes back)
    epoch: int          # logical epoch (goes back after a rollback)
    step: int
    val_loss: float
    sha256: str
    size: int
    version: int = FORMAT_VERSION

    @property
    def stem(self) -> str:
        return f"g{self.global_epoch:06d}"


def save(directory: Path, state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
         val_loss: float) -> CheckpointInfo:
    """Write `state` and then its marker, both atomically."""
    info, data = encode(state, global_epoch=global_epoch, epoch=epoch, step=step,
                        val_loss=val_loss)
    write(directory, info, data)
    return info


def encode(state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
           val_loss: float) -> tuple[CheckpointInfo, bytes]:
    """The bytes of `state` as a checkpoint, and the marker that describes them."""
    buffer = io.BytesIO()
    torch.save({"version": FORMAT_VERSION, **state}, buffer)
    data = buffer.getvalue()
    return CheckpointInfo(global_epoch, epoch, step, float(val_loss),
                          hashlib.sha256(data).hexdigest(), len(data)), data


def write(directory: Path, info: CheckpointInfo, data: bytes) -> None:
    """Write encoded checkpoint bytes and then their marker, both atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / f"{info.stem}.pt", lambda f: f.write(data))
    marker = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in asdict(info).items()}
    atomic_write_text(directory / f"{info.stem}.json", json.dumps(marker))


def _read_marker(path: Path) -> CheckpointInfo | None:
    try:
        raw = json.loads(read_bytes(path, "checkpoint marker", MARKER_LIMIT))
        raw["val_loss"] = math.inf if raw.get("val_loss") is None else raw["val_loss"]
        return CheckpointInfo(**raw)
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring checkpoint marker %s: %s", path, exc)
        return None


def listing(directory: Path) -> list[CheckpointInfo]:
    """Checkpoints whose marker is complete, oldest first (their bytes not yet verified)."""
    if not directory.is_dir():
        return []
    infos = [_read_marker(p) for p in sorted(directory.glob("g*.json"))]
    return [i for i in infos if i is not None and (directory / f"{i.stem}.pt").exists()]


def load(directory: Path, info: CheckpointInfo, map_location: str | torch.device = "cpu"
         ) -> dict[str, Any]:
    """The state of one checkpoint, after checking its size, checksum and version."""
    path = directory / f"{info.stem}.pt"
    try:  # never more than the marker says (a checkpoint swapped for a huge or special file)
        data = read_bytes(path, "checkpoint", info.size)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if len(data) != info.size or hashlib.sha256(data).hexdigest() != info.sha256:
        raise CheckpointError(f"checkpoint {path} does not match its checksum "
                              f"(truncated or corrupted)")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # an unpickler refusal is the safe outcome: never trust it
        raise CheckpointError(f"checkpoint {path} was refused by the safe loader: {exc}") \
            from None
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version "
                              f"{state.get('version') if isinstance(state, dict) else '?'}, "
                              f"expected {FORMAT_VERSION}")
    return state


def load_latest(directory: Path, *, max_global_epoch: int | None = None,
                epoch: int | None = None, map_location: str | torch.device = "cpu"
                ) -> tuple[CheckpointInfo, dict[str, Any]] | None:
    """The newest checkpoint that verifies (optionally of one logical epoch or older than a
    global epoch); a damaged one is skipped with a warning naming the file."""
    for info in reversed(listing(directory)):
        if max_global_epoch is not None and info.global_epoch > max_global_epoch:
            continue
        if epoch is not None and info.epoch != epoch:
            continue
        try:
            return info, load(directory, info, map_location)
        except (CheckpointError, OSError) as exc:
            log.warning("skipping checkpoint: %s", exc)
    return None


def prune(directory: Path, keep_last: int, keep: AbstractSet[int] = frozenset()) -> None:
    """Delete all but the last `keep_last` checkpoints and those of global epochs in `keep`."""
    infos = listing(directory)
    for info in infos[:-keep_last] if keep_last else infos:
        if info.global_epoch in keep:
            continue
        (directory / f"{info.stem}.json").unlink(missing_ok=True)
        (directory / f"{info.stem}.pt").unlink(missing_ok=True)


def discard_after(directory: Path, global_epoch: int) -> None:
    """Delete the checkpoints of a timeline abandoned by a rollback to `global_epoch`."""
    for info in listing(directory):
        if info.global_epoch > global_epoch:
            (directory / f"{info.stem}.json").unlink(missing_ok=True)
            (directory / f"{info.stem}.pt").unlink(missing_ok=True)
