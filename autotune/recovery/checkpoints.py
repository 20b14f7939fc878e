"""Where a supervised run keeps its rollback targets: on disk, or in memory.

`DiskCheckpoints` is a run directory's `checkpoints/` folder (atomic, checksummed files,
`autotune.recovery.checkpoint_files`), written on the calling thread.
`BackgroundCheckpoints` writes the same files off the training thread and keeps the
rollback targets in memory: `autotune train`, `resume` and every search trial use it, so
a killed run continues from its last checkpoint and a rollback reads no file.
`MemoryCheckpoints` holds CPU copies of the states in the process: the framework
callbacks (`autotune.integrations`) roll back in place inside the framework's own `fit`,
where nothing outlives the process anyway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from autotune.recovery import checkpoint_files
from autotune.recovery.checkpoint_files import CheckpointInfo
from autotune.recovery.writer import Writer

__all__ = ["BackgroundCheckpoints", "CheckpointStore", "DiskCheckpoints", "MemoryCheckpoints",
           "cpu_copy"]


class CheckpointStore(Protocol):
    """The supervisor's view of its checkpoints."""

    def save(self, state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
             val_loss: float) -> None:
        """Keep `state` as the checkpoint of logical `epoch` written at `global_epoch`."""
        ...

    def listing(self) -> list[CheckpointInfo]:
        """The kept checkpoints, oldest first."""
        ...

    def load(self, epoch: int, map_location: str | torch.device = "cpu"
             ) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest valid checkpoint of logical `epoch`, or None."""
        ...

    def prune(self, keep_last: int, keep: set[int]) -> None:
        """Drop all but the last `keep_last` and those of global epochs in `keep`."""
        ...

    def discard_after(self, global_epoch: int) -> None:
        """Drop the checkpoints of a timeline a rollback to `global_epoch` abandoned."""
        ...

    def in_order(self, job: Callable[[], None]) -> None:
        """Run `job` (a write of the run's) in order with the saves: before any later
        save reaches the disk."""
        ...

    def close(self) -> None:
        """Every write given so far done (a failed one's error raised): the run ends."""
        ...

    def abandon(self) -> None:
        """Drop the writes not started: this process must write nothing more."""
        ...


class WritesNow:
    """For a store that does its work on the caller's thread: nothing is ever queued."""

    def in_order(self, job: Callable[[], None]) -> None:
        """Run `job` now: every save before it is already done."""
        job()

    def close(self) -> None:
        """Nothing queued to wait for."""

    def abandon(self) -> None:
        """Nothing queued to drop."""


@dataclass(frozen=True)
class DiskCheckpoints(WritesNow):
    """A run directory's checkpoints folder."""

    directory: Path

    def save(self, state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
             val_loss: float) -> None:
        checkpoint_files.save(self.directory, state, global_epoch=global_epoch, epoch=epoch,
                              step=step, val_loss=val_loss)

    def listing(self) -> list[CheckpointInfo]:
        return checkpoint_files.listing(self.directory)

    def load(self, epoch: int, map_location: str | torch.device = "cpu"
             ) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        return checkpoint_files.load_latest(self.directory, epoch=epoch, map_location=map_location)

    def prune(self, keep_last: int, keep: set[int]) -> None:
        checkpoint_files.prune(self.directory, keep_last, keep=keep)

    def discard_after(self, global_epoch: int) -> None:
        checkpoint_files.discard_after(self.directory, global_epoch)


_IMMUTABLE = (bool, int, float, complex, str, bytes, type(None))


def cpu_copy(state: Any) -> Any:
    """A deep copy of a state with every tensor detached and on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, _IMMUTABLE):  # a run's step losses: hundreds of floats an epoch
        return state
    if isinstance(state, Mapping):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(v) for v in state)
    return copy.deepcopy(state)


@dataclass
class MemoryCheckpoints(WritesNow):
    """CPU copies of the states, in this process (nothing is written)."""

    kept: list[tuple[CheckpointInfo, dict[str, Any]]] = field(default_factory=list)

    def save(self, state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
             val_loss: float) -> None:
        info = CheckpointInfo(global_epoch, epoch, step, float(val_loss), sha256="", size=0)
        self.kept = [(i, s) for i, s in self.kept if i.global_epoch != global_epoch]
        self.kept.append((info, cpu_copy(state)))

    def listing(self) -> list[CheckpointInfo]:
        return [info for info, _ in self.kept]

    def load(self, epoch: int, map_location: str | torch.device = "cpu"
             ) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        # A copy: the caller loads it into live objects, and the checkpoint must stay as is
        # for a later rollback to the same epoch.
        for info, state in reversed(self.kept):
            if info.epoch == epoch:
                return info, cpu_copy(state)
        return None

    def prune(self, keep_last: int, keep: set[int]) -> None:
        last = {i.global_epoch for i, _ in self.kept[-keep_last:]} if keep_last else set()
        self.kept = [(i, s) for i, s in self.kept if i.global_epoch in last | keep]

    def discard_after(self, global_epoch: int) -> None:
        self.kept = [(i, s) for i, s in self.kept if i.global_epoch <= global_epoch]


class BackgroundCheckpoints:
    """A run directory's checkpoints, written off the training thread; the rollback
    targets in memory.

    `save` copies the state to the CPU on the training thread (tensors cloned: the trainer
    goes on updating its own in place) and keeps it in memory (`MemoryCheckpoints`); the
    background writer (`autotune.recovery.writer`) then serialises and checksums it and
    writes it in `checkpoint_files`' atomic, marked format while the next epoch trains.
    `prune` and `discard_after` act on memory at once and on the files in order after the
    queued writes, so the files end as `DiskCheckpoints` would leave them. The listing is
    known without waiting (this process's saves, and the files an earlier process left: a
    resumed run), and a rollback to one of this process's saves reads no file; one to an
    earlier process's file waits for the writer and reads it, checksum verified. A kill
    finds the last checkpoint whose marker was written, never a half-written one.
    """

    def __init__(self, directory: Path, writer: Writer | None = None) -> None:
        self.directory = Path(directory)
        self.writer = writer or Writer()
        self.memory = MemoryCheckpoints()
        self.earlier = checkpoint_files.listing(self.directory)

    def save(self, state: dict[str, Any], *, global_epoch: int, epoch: int, step: int,
             val_loss: float) -> None:
        self.earlier = [i for i in self.earlier if i.global_epoch != global_epoch]
        self.memory.save(state, global_epoch=global_epoch, epoch=epoch, step=step,
                         val_loss=val_loss)
        info, copy_ = self.memory.kept[-1]

        def write() -> None:
            encoded, data = checkpoint_files.encode(copy_, global_epoch=info.global_epoch,
                                              epoch=info.epoch, step=info.step,
                                              val_loss=info.val_loss)
            checkpoint_files.write(self.directory, encoded, data)

        self.writer.submit(write)

    def listing(self) -> list[CheckpointInfo]:
        return sorted([*self.earlier, *self.memory.listing()], key=lambda i: i.global_epoch)

    def load(self, epoch: int, map_location: str | torch.device = "cpu"
             ) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        held = self.memory.load(epoch)
        newest = max((i.global_epoch for i in self.earlier if i.epoch == epoch), default=-1)
        if held is not None and held[0].global_epoch > newest:
            return held
        self.writer.flush()
        return checkpoint_files.load_latest(self.directory, epoch=epoch, map_location=map_location)

    def prune(self, keep_last: int, keep: set[int]) -> None:
        listed = self.listing()
        kept = {i.global_epoch for i in listed[-keep_last:]} if keep_last else set()
        kept |= set(keep)
        self.earlier = [i for i in self.earlier if i.global_epoch in kept]
        self.memory.kept = [(i, s) for i, s in self.memory.kept if i.global_epoch in kept]
        kept_keys = set(keep)
        self.writer.submit(lambda: checkpoint_files.prune(self.directory, keep_last,
                                                          keep=kept_keys))

    def discard_after(self, global_epoch: int) -> None:
        self.earlier = [i for i in self.earlier if i.global_epoch <= global_epoch]
        self.memory.discard_after(global_epoch)
        self.writer.submit(lambda: checkpoint_files.discard_after(self.directory, global_epoch))

    def in_order(self, job: Callable[[], None]) -> None:
        """Queue `job` on the writer, after the saves and writes queued before it."""
        self.writer.submit(job)

    def close(self) -> None:
        """Wait for the queued writes (raising a failed one's error) and end the writer."""
        self.writer.close()

    def abandon(self) -> None:
        """Drop the writes not started (this process must write nothing more)."""
        self.writer.abandon()
