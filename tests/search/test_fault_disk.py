"""The disk fills during a search; a checkpoint cut short is never trusted.

The trials' run directories live on a small tmpfs (the test needs root to mount it; it
skips otherwise). Once the first trial has a checkpoint, a file takes all but 200 KB of
the space: the next checkpoint cannot be written. `autotune search` exits 1 with one line
naming the file (no traceback), nothing half-written is left, and once the space is freed
`autotune resume --study` ends the study with exactly the requested trials, the faulted
trial continued from its last good checkpoint.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from autotune.cli.app import main
from autotune.recovery import checkpoint_files as checkpoint
from tests.search.faults import (
    STUDY,
    TIMEOUT,
    Holds,
    check_checkpoints,
    check_continued,
    check_study,
    finish,
    owned,
    saved_all,
    snapshot,
    spawn,
    trials,
)

EPOCHS = 3
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "epochs": EPOCHS, "max_tasks": 20}
TOTAL = 2
HOLD_STEP = 3  # the second step of epoch 2 (2 steps an epoch): epoch 1 saved


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all of `disk` but `leave` bytes."""
    stat = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def test_a_truncated_or_unmarked_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    for g in (1, 2):
        checkpoint.save(folder, {"w": torch.ones(64) * g}, global_epoch=g, epoch=g, step=g,
                        val_loss=1.0)
    newest = folder / "g000002.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as a full disk would
    (folder / "g000003.pt").write_bytes(b"no marker")  # a state whose marker never came
    info, state = checkpoint.load_latest(folder)
    assert info.global_epoch == 1 and torch.equal(state["w"], torch.ones(64))
    with pytest.raises(checkpoint.CheckpointError, match="checksum"):
        checkpoint.load(folder, checkpoint.listing(folder)[-1])


@pytest.mark.slow
def test_a_full_disk_ends_the_search_with_one_line_and_resume_finishes(
        tmp_path: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    storage = f"sqlite:///{tmp_path / 'studies' / 'faults.db'}"  # on the big disk
    artifacts = small_disk / "artifacts"
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    holds = Holds(tmp_path / "holds")
    proc = spawn(tmp_path, "search", "--storage", storage, "--study", STUDY, "--trials",
                 str(TOTAL), "--space", "space.yaml", "--artifacts", str(artifacts),
                 env=holds.env(HOLD_STEP))
    try:
        def first_checkpoint() -> object:
            mine = owned(trials(storage), proc.pid)
            return mine and saved_all(Path(mine[0].user_attrs["run_dir"])) and mine[0]
        victim = holds.wait(proc.pid, [proc], first_checkpoint)
        filler = fill(small_disk, leave=200_000)  # less than one checkpoint
        holds.release(proc.pid, for_good=True)
        [(code, err)] = finish([proc], TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"autotune: cannot write {victim.user_attrs['run_dir']}")
    assert "No space left on device" in lines[0]
    run_dir = Path(victim.user_attrs["run_dir"])
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # nothing half-written kept
    snap = snapshot(victim)
    assert snap.checkpoint >= 1
    faulted = next(t for t in trials(storage) if t.number == victim.number)
    assert faulted.state == TrialState.FAIL and faulted.user_attrs["interrupted"]

    filler.unlink()  # space again
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["resume", "--study", STUDY, "--storage", storage]) == 0, \
        capsys.readouterr().err[-3000:]
    everything = trials(storage)
    check_study(everything, TOTAL)
    check_continued(snap, everything, EPOCHS)
    assert check_checkpoints(artifacts) >= TOTAL
