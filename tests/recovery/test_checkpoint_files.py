"""Checkpoints: atomic, checksummed, safe to load; a damaged latest falls back to the previous."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch

from autotune.recovery import checkpoint_files as checkpoint
from autotune.recovery.checkpoint_files import CheckpointError


def _state(value: float) -> dict[str, object]:
    return {"weights": torch.full((4,), value), "step": int(value)}


def _save(directory: Path, n: int) -> None:
    for g in range(1, n + 1):
        checkpoint.save(directory, _state(float(g)), global_epoch=g, epoch=g, step=g * 10,
                        val_loss=1.0 / g)


def test_save_and_load_latest(tmp_path: Path) -> None:
    _save(tmp_path, 3)
    info, state = checkpoint.load_latest(tmp_path)
    assert (info.global_epoch, info.epoch, info.step) == (3, 3, 30)
    assert torch.equal(state["weights"], torch.full((4,), 3.0))
    assert not list(tmp_path.glob("*.tmp"))  # no temporary files left behind


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "no_marker"])
def test_damaged_latest_falls_back_to_previous(tmp_path: Path, damage: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path, 3)
    latest = tmp_path / "g000003.pt"
    data = bytearray(latest.read_bytes())
    if damage == "truncate":
        latest.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        data[len(data) // 2] ^= 0x01
        latest.write_bytes(bytes(data))
    else:  # the process died between the state and its completion marker
        (tmp_path / "g000003.json").unlink()
    with caplog.at_level(logging.WARNING):
        info, state = checkpoint.load_latest(tmp_path)
    assert info.global_epoch == 2 and state["step"] == 2
    if damage != "no_marker":
        assert "g000003.pt" in caplog.text and "checksum" in caplog.text


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os
        return os.system, (f"touch {self.marker}",)

    marker = ""


def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    evil = pickle.dumps({"version": 1, "x": _Payload()})
    # Forge a checkpoint whose checksum matches: the safe loader must still refuse it.
    info = checkpoint.save(tmp_path, _state(2.0), global_epoch=2, epoch=2, step=20, val_loss=0.1)
    (tmp_path / f"{info.stem}.pt").write_bytes(evil)
    import hashlib
    import json
    marker_path = tmp_path / f"{info.stem}.json"
    meta = json.loads(marker_path.read_text())
    meta.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    marker_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="refused by the safe loader"):
        checkpoint.load(tmp_path, checkpoint.listing(tmp_path)[-1])
    assert not marker.exists()
    info, _ = checkpoint.load_latest(tmp_path)  # falls back to the genuine one
    assert info.global_epoch == 1 and not marker.exists()


def test_prune_keeps_last_k_and_the_best(tmp_path: Path) -> None:
    for g, loss in enumerate([0.5, 0.1, 0.6, 0.7, 0.8], start=1):
        checkpoint.save(tmp_path, _state(float(g)), global_epoch=g, epoch=g, step=g,
                        val_loss=loss)
    checkpoint.prune(tmp_path, keep_last=2, keep={2})
    assert [i.global_epoch for i in checkpoint.listing(tmp_path)] == [2, 4, 5]


def test_discard_after_drops_an_abandoned_timeline(tmp_path: Path) -> None:
    _save(tmp_path, 4)
    checkpoint.discard_after(tmp_path, 2)
    assert [i.global_epoch for i in checkpoint.listing(tmp_path)] == [1, 2]
