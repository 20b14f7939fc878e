"""`autotune train` and `autotune resume RUN_DIR` end to end on the small real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autotune.cli.app import main
from autotune.recovery import checkpoint_files as checkpoint
from tests.conftest import small_set_args

KEYS = {"epoch", "global_epoch", "step", "train_loss", "val_loss", "val_cell_acc", "val_exact",
        "lr", "grad_norm", "time_s"}
SAME = ("epoch", "global_epoch", "step", "train_loss", "val_loss", "val_cell_acc", "lr",
        "grad_norm")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(tmp_path: Path, *extra: str, run: str = "run") -> int:
    return main(["train", "--device", "cpu", "--run-dir", str(tmp_path / run),
                 *small_set_args(epochs=3), *extra])


def test_train_writes_the_run_directory(tmp_path: Path) -> None:
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "effective_config.yaml",
                                               "metrics.jsonl", "events.jsonl", "checkpoints"}
    metrics = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert KEYS <= set(metrics[0])
    assert metrics[-1]["val_loss"] < metrics[0]["val_loss"]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["epochs"] == 3 and config["max_tasks"] == 40
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["schedule_audit"]["ok"]
    assert 0.0 <= summary["test"]["test_exact"] <= 1.0
    assert (run / "events.jsonl").read_text() == ""


def test_nan_is_recovered_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run's first NaN, with nothing before it showing a climb, is put down to its batch.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@6")
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    events = _lines(run / "events.jsonl")
    assert [e["kind"] for e in events] == ["diverged", "recovered"]
    assert events[0]["reason"] == "nonfinite_loss" and events[0]["evidence"]["sudden"] == 1.0
    assert events[1]["rolled_back_to"] == 1  # step 6 is in epoch 2 (4 steps an epoch)
    assert events[1]["actions"] == ["skip_batch"]
    assert events[1]["changes"] == {"skip_batches": [[], [6]]}
    metrics = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["global_epoch"] for m in metrics] == [1, 3, 4]  # the lost epoch counted
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schedule_audit"]["ok"] and summary["recoveries"] == 1


def test_a_second_nan_climbs_the_ladder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The replay of epoch 2 meets another at global step 10: the configuration is suspect.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@6,nan_loss@10")
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    events = _lines(run / "events.jsonl")
    assert [e["kind"] for e in events] == ["diverged", "recovered"] * 2
    assert events[1]["actions"] == ["skip_batch"]
    assert events[3]["rolled_back_to"] == 1
    lr_old, lr_new = events[3]["changes"]["learning_rate"]
    assert lr_new == pytest.approx(lr_old / 3)
    effective = yaml.safe_load((run / "effective_config.yaml").read_text())
    assert effective["learning_rate"] == pytest.approx(lr_new)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["schedule_audit"]["ok"] and summary["recoveries"] == 2


def test_recovery_watch_warns_and_changes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path, "--set", "learning_rate=1.0", "--set", "warmup_epochs=0",
                  "--recovery", "watch") == 0
    run = tmp_path / "run"
    events = _lines(run / "events.jsonl")
    assert {e["kind"] for e in events} == {"alarm"}
    assert events[0]["reason"] == "loss_increase" and events[0]["epoch"] == 1
    assert len(_lines(run / "metrics.jsonl")) == 3  # the run went on to its planned end
    effective = yaml.safe_load((run / "effective_config.yaml").read_text())
    assert (effective["learning_rate"], effective["recovery"]) == (1.0, "watch")
    out = capsys.readouterr().out
    assert "warning: divergence alarm (loss_increase) at epoch 1" in out


@pytest.mark.slow
def test_recovery_off_stops_with_exit_3_then_resume_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path, "--set", "learning_rate=1.0", "--set", "warmup_epochs=0",
                  "--recovery", "off") == 3
    run = tmp_path / "run"
    events = _lines(run / "events.jsonl")
    assert [e["kind"] for e in events] == ["diverged"]
    assert events[0]["reason"] == "loss_increase"
    capsys.readouterr()
    assert main(["diagnose", str(run), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert findings[0]["code"] in {"lr_too_high", "loss_increase"}
    code = main(["resume", str(run), "--device", "cpu"])
    events = _lines(run / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds[:3] == ["diverged", "resumed", "recovered"]
    assert events[2]["changes"]["learning_rate"][1] == pytest.approx(1 / 3)
    # Seeded: four cuts (1 -> 0.0123, warmup 1 epoch); the bump at epoch 2 that follows,
    # right after the new warmup, waits an epoch and comes back: stable at the end.
    assert code == 0
    # Resuming a stopped run asks for recovery: it stays on for the rest of the run.
    assert events[1]["changes"] == {"recovery": ["off", "on"]}
    assert yaml.safe_load((run / "effective_config.yaml").read_text())["recovery"] == "on"
    assert sum(e["kind"] == "recovered" for e in events) == 4


@pytest.mark.slow
def test_a_collapsed_run_restarts_with_a_third_of_the_rate_and_learns(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # On the small slice, a peak of 0.01 without warmup leaves the model predicting the
    # colour frequencies: the validation loss sits at their level from epoch 3.
    assert main(["train", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
                 *small_set_args(epochs=6, learning_rate=0.01, warmup_epochs=0)]) == 0
    run = tmp_path / "run"
    events = _lines(run / "events.jsonl")
    assert [(e["kind"], e["reason"]) for e in events[:2]] == [("diverged", "collapsed"),
                                                              ("recovered", "collapsed")]
    assert events[0]["evidence"]["marginal_loss"] == pytest.approx(1.736, abs=1e-3)
    assert events[1]["rolled_back_to"] == 0  # it never learned: the initial weights
    assert events[1]["changes"] == {"learning_rate": [0.01, pytest.approx(0.01 / 3)]}
    metrics = _lines(run / "metrics.jsonl")
    level = metrics[0]["marginal_loss"]
    collapsed = [m["val_loss"] for m in metrics[:events[0]["global_epoch"]]]
    assert all(v > level * 0.99 for v in collapsed[2:])
    assert metrics[-1]["val_loss"] < level * 0.99  # below the level: it learned
    capsys.readouterr()
    assert main(["diagnose", str(run), "--json"]) == 0
    codes = [f["code"] for f in json.loads(capsys.readouterr().out)["findings"]]
    assert "collapsed" in codes and "recovered" in codes


@pytest.mark.slow
def test_kill_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    assert _train(tmp_path, run="straight") == 0
    env = {**os.environ, "AUTOTUNE_INJECT": "kill@9"}  # in epoch 3 (4 steps an epoch)
    cmd = [sys.executable, "-m", "autotune", "train", "--device", "cpu", "--run-dir",
           str(tmp_path / "killed"), *small_set_args(epochs=3)]
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 137
    assert len(_lines(tmp_path / "killed" / "metrics.jsonl")) == 2
    assert main(["resume", str(tmp_path / "killed"), "--device", "cpu"]) == 0
    straight = _lines(tmp_path / "straight" / "metrics.jsonl")
    resumed = _lines(tmp_path / "killed" / "metrics.jsonl")
    assert len(resumed) == len(straight) == 3
    for a, b in zip(straight, resumed):
        for key in SAME:
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_resume_a_finished_run_needs_more_epochs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    assert main(["resume", str(run)]) == 2
    assert "already finished its 3 epochs" in capsys.readouterr().err
    assert main(["resume", str(run), "--epochs", "4", "--device", "cpu"]) == 0
    assert [m["epoch"] for m in _lines(run / "metrics.jsonl")] == [1, 2, 3, 4]


def test_a_run_killed_before_its_summary_is_finished_by_resume(tmp_path: Path) -> None:
    # Killed after the last epoch's checkpoint, during the held-out scoring: no summary.
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()
    assert main(["resume", str(run), "--device", "cpu"]) == 0
    again = json.loads((run / "summary.json").read_text())
    assert again["status"] == "completed" and again["best_val_loss"] == summary["best_val_loss"]
    assert again["test"]["test_pass2"] == summary["test"]["test_pass2"]
    assert [m["epoch"] for m in _lines(run / "metrics.jsonl")] == [1, 2, 3]


def test_resume_uses_the_previous_checkpoint_when_the_latest_is_damaged(
        tmp_path: Path) -> None:
    assert _train(tmp_path) == 0
    run = tmp_path / "run"
    latest = checkpoint.listing(run / "checkpoints")[-1]
    pt = run / "checkpoints" / f"{latest.stem}.pt"
    pt.write_bytes(pt.read_bytes()[:100])
    assert main(["resume", str(run), "--epochs", "4", "--device", "cpu"]) == 0
    metrics = _lines(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]  # epoch 3 redone from epoch 2


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("empty", "is not a run directory"),
    ("no_checkpoint", "has no valid checkpoint"),
])
def test_resume_bad_run_dirs(tmp_path: Path, setup: str, message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x"
    if setup != "missing":
        target.mkdir()
    if setup == "no_checkpoint":
        (target / "config.yaml").write_text("epochs: 2\n")
    before = sorted(tmp_path.rglob("*"))
    assert main(["resume", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.slow
def test_ctrl_c_exits_130_and_resume_continues(tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "autotune", "train", "--device", "cpu", "--run-dir", str(run),
           *small_set_args(epochs=40)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 600  # a bound for a hung run, not a speed
    while not (metrics.exists() and metrics.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "no epoch was written"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = len(_lines(metrics))
    assert 1 <= done < 40
    assert _lines(run / "events.jsonl")[-1]["kind"] == "interrupted"
    assert main(["resume", str(run), "--epochs", str(done + 1), "--device", "cpu"]) == 0
    assert [m["epoch"] for m in _lines(metrics)] == list(range(1, done + 2))


def test_a_full_disk_is_one_line_and_leaves_nothing_to_trust(tmp_path: Path) -> None:
    import resource

    def small_files() -> None:  # files over 64 KiB fail to write, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "autotune", "train", "--device", "cpu", "--run-dir", str(run),
           *small_set_args(epochs=2)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          preexec_fn=small_files)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "g000000.pt" in lines[0]
    assert not list(run.rglob("*.tmp"))
    assert checkpoint.listing(run / "checkpoints") == []
    assert main(["resume", str(run)]) == 2  # nothing there that a resume would trust


def test_a_run_of_an_older_version_resumes(tmp_path: Path) -> None:
    # Checkpoints written before the supervisor kept its own state held the trainer's alone.
    assert _train(tmp_path) == 0
    ckpts = tmp_path / "run" / "checkpoints"
    for info in checkpoint.listing(ckpts):
        state = checkpoint.load(ckpts, info)
        old = dict(state["trainer"])
        (ckpts / f"{info.stem}.pt").unlink()
        (ckpts / f"{info.stem}.json").unlink()
        checkpoint.save(ckpts, old, global_epoch=info.global_epoch, epoch=info.epoch,
                        step=info.step, val_loss=info.val_loss)
    assert main(["resume", str(tmp_path / "run"), "--epochs", "4", "--device", "cpu"]) == 0
    metrics = _lines(tmp_path / "run" / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4]
