"""The in-memory checkpoint store keeps CPU copies and follows the disk store's rules."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from autotune.recovery import checkpoint_files as checkpoint
from autotune.recovery.checkpoints import (
    BackgroundCheckpoints,
    DiskCheckpoints,
    MemoryCheckpoints,
)


def _fill(store: MemoryCheckpoints | DiskCheckpoints | BackgroundCheckpoints) -> torch.Tensor:
    weight = torch.zeros(3)
    for g in range(5):
        weight += 1.0
        store.save({"w": weight.clone(), "n": g}, global_epoch=g, epoch=g, step=10 * g,
                   val_loss=math.inf if g == 0 else [0.0, 2.0, 1.0, 3.0, 4.0][g])
    return weight


def test_memory_store_prunes_and_discards_like_the_disk_store(tmp_path: Path) -> None:
    memory, disk = MemoryCheckpoints(), DiskCheckpoints(tmp_path)
    for store in (memory, disk):
        _fill(store)
        store.prune(2, keep={0, 2})
        assert [i.global_epoch for i in store.listing()] == [0, 2, 3, 4]
        store.discard_after(2)
        assert [i.epoch for i in store.listing()] == [0, 2]
        info, state = store.load(2)
        assert (info.step, info.val_loss, state["n"]) == (20, 1.0, 2)
        assert store.load(3) is None


def test_memory_store_keeps_copies_that_later_changes_do_not_touch() -> None:
    store = MemoryCheckpoints()
    weight = _fill(store)
    weight += 100.0  # the live tensor moves on
    loaded = store.load(4)
    assert loaded is not None
    loaded[1]["w"] += 1.0  # and so does what a rollback loaded
    again = store.load(4)
    assert again is not None and again[1]["w"].tolist() == [5.0, 5.0, 5.0]


def test_background_store_leaves_the_files_of_the_disk_store(tmp_path: Path) -> None:
    background, disk = BackgroundCheckpoints(tmp_path / "bg"), DiskCheckpoints(tmp_path / "d")
    for store in (background, disk):
        _fill(store)
        store.prune(2, keep={0, 2})
        store.discard_after(3)
    background.close()
    assert [i.global_epoch for i in background.listing()] == [0, 2, 3]
    files = [(i.global_epoch, i.epoch, i.step, i.val_loss) for i in disk.listing()]
    written = DiskCheckpoints(tmp_path / "bg").listing()
    assert [(i.global_epoch, i.epoch, i.step, i.val_loss) for i in written] == files
    for info in written:  # atomic, checksummed, loadable with weights_only
        assert checkpoint.load(tmp_path / "bg", info)["n"] == info.global_epoch


def test_background_store_rolls_back_from_memory_and_resumes_from_files(
        tmp_path: Path) -> None:
    store = BackgroundCheckpoints(tmp_path)
    _fill(store)
    store.close()
    for path in tmp_path.glob("g*.pt"):  # a rollback to this process's save reads no file
        path.write_bytes(b"damaged")
    loaded = store.load(3)
    assert loaded is not None and loaded[1]["w"].tolist() == [4.0, 4.0, 4.0]
    later = BackgroundCheckpoints(tmp_path)  # a resumed run: the files are what it has
    assert [i.global_epoch for i in later.listing()] == [0, 1, 2, 3, 4]
    assert later.load(3) is None  # every file damaged: none is trusted


def test_a_write_given_in_order_follows_the_saves_before_it(tmp_path: Path) -> None:
    # The supervisor writes an epoch's metrics line this way, so a checkpoint on disk
    # always has its epoch's metrics; for the background store the order is the writer's.
    store = BackgroundCheckpoints(tmp_path / "bg")
    _fill(store)
    seen: list[list[int]] = []
    store.in_order(lambda: seen.append(
        [i.global_epoch for i in checkpoint.listing(tmp_path / "bg")]))
    store.close()
    assert seen == [[0, 1, 2, 3, 4]]
    for now in (MemoryCheckpoints(), DiskCheckpoints(tmp_path / "d")):
        ran: list[int] = []
        now.in_order(lambda ran=ran: ran.append(1))
        assert ran == [1]  # written on the caller's thread: at once
        now.close()
        now.abandon()
