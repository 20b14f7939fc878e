"""One writer a run directory: a second `train`, `resume`, `supervise` or trial on a run
directory another process holds is exit 2 naming the holder; a folder with another run's
files but no configuration is never adopted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import autotune
from autotune.cli import main
from autotune.errors import ConfigError
from autotune.recovery.lock import RunDirBusy, holder_of, run_lock
from tests.conftest import small_set_args
from tests.recovery.mlp_trainer import MLPTrainer

HOLD = ("import sys; from pathlib import Path; from autotune.recovery.lock import run_lock\n"
        "with run_lock(Path(sys.argv[1]), 'autotune resume'):\n"
        "    print('held', flush=True); sys.stdin.read()\n")


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A run directory whose lock another process holds (until the test ends)."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield run, proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=60)


def test_a_second_holder_is_refused_naming_the_first(
        held: tuple[Path, subprocess.Popen[str]]) -> None:
    run, proc = held
    with pytest.raises(RunDirBusy) as caught:
        with run_lock(run, "autotune train"):
            pass
    message = str(caught.value)
    assert f"process {proc.pid} on host '{socket.gethostname()}'" in message
    assert "autotune resume" in message and "in use" in message


def test_supervise_on_a_held_run_directory_is_refused(
        held: tuple[Path, subprocess.Popen[str]]) -> None:
    run, proc = held
    with pytest.raises(RunDirBusy, match=f"process {proc.pid}"):
        autotune.supervise(MLPTrainer(), run, epochs=2)
    assert not (run / "config.yaml").exists() and not (run / "metrics.jsonl").exists()


def test_train_on_a_held_run_directory_is_exit_2_naming_the_holder(
        held: tuple[Path, subprocess.Popen[str]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    run, proc = held
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    before = sorted(p.name for p in run.iterdir())
    code = main(["train", "--device", "cpu", "--run-dir", str(run), *small_set_args()])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"is in use by process {proc.pid}" in err[0]
    assert sorted(p.name for p in run.iterdir()) == before


def test_the_holder_of_a_dead_or_taken_trial_can_be_stolen_from(
        held: tuple[Path, subprocess.Popen[str]]) -> None:
    run, proc = held
    with run_lock(run, "trial 3 of study s", steal_from=[(socket.gethostname(), proc.pid)]):
        assert holder_of(run) == {"host": socket.gethostname(), "pid": os.getpid(),
                                  "command": "trial 3 of study s"}


def test_the_lock_is_released_when_the_run_ends(tmp_path: Path) -> None:
    autotune.supervise(MLPTrainer(), tmp_path / "run", epochs=2)
    with run_lock(tmp_path / "run"):  # free again
        pass
    again = autotune.supervise(MLPTrainer(), tmp_path / "run", epochs=3)
    assert again.global_epochs == 3


def test_a_folder_with_another_runs_files_but_no_config_is_not_adopted(
        tmp_path: Path) -> None:
    other = tmp_path / "other"
    autotune.supervise(MLPTrainer(), other, epochs=2)
    (other / "config.yaml").unlink()  # what is left of another run, without its config
    before = sorted(str(p) for p in other.rglob("*"))
    with pytest.raises(ConfigError, match="holds files of a run .*metrics.jsonl.* but no "
                                          "config.yaml"):
        autotune.supervise(MLPTrainer(), other, epochs=4)
    assert sorted(str(p) for p in other.rglob("*")) == before
