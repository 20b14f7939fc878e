"""`diagnose --follow`: a log judged while another process writes it.

The tests wait on events (a finding line printed, the process ending), never on timing:
the writer appends the next part only once the follower has reported the previous one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotune.cli import main
from autotune.diagnose.follow import Outcome, follow

ROOT = Path(__file__).resolve().parents[2]
NO_LR = {"learning_rate": None, "warmup_epochs": None, "schedule": None, "epochs": None}


def _loss(epoch: int) -> float:
    return round(0.4 + 2.0 * 0.8 ** epoch, 4)


def _lines(fmt: str, rows: list[dict[str, float]]) -> str:
    out = []
    for r in rows:
        if fmt == "csv":
            out.append(f"{r['epoch']:g},{r['train_loss']}\n")
        elif fmt == "jsonl":
            out.append(json.dumps(r) + "\n")
        else:
            out.append(f"2024-01-01 12:00:00,123 INFO epoch {r['epoch']:g} "
                       f"loss={r['train_loss']}\n")
    return "".join(out)


HEADER = {"csv": "epoch,train_loss\n", "jsonl": "", "text": "INFO starting\n"}


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "text"])
def test_follow_reports_a_spike_then_the_nan_written_after_it(tmp_path: Path,
                                                              fmt: str) -> None:
    log = tmp_path / f"train.{fmt if fmt != 'text' else 'log'}"
    healthy = [{"epoch": e, "train_loss": _loss(e)} for e in range(12)]
    spike = [{"epoch": 12, "train_loss": round(4 * _loss(12), 4)}]
    log.write_text(HEADER[fmt] + _lines(fmt, healthy + spike))
    follower = subprocess.Popen(
        [sys.executable, "-m", "autotune", "diagnose", str(log), "--follow", "--idle", "60",
         "--fail-on", "error", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())  # waits for the finding
        assert first["code"] == "loss_spike"
        assert first["epoch"] == 12
        # Only now, with the spike reported, the run goes on and its loss turns NaN.
        _append(log, _lines(fmt, [{"epoch": 13, "train_loss": 0.9},
                                  {"epoch": 14, "train_loss": float("nan")}]))
        second = json.loads(follower.stdout.readline())
        assert second["code"] == "nonfinite_loss"
        assert second["epoch"] == 14
        assert follower.wait() == 3
    finally:
        follower.kill()
        follower.communicate()


def test_follow_returns_at_idle_on_a_healthy_log(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "train.csv"
    log.write_text("epoch,train_loss\n" + _lines("csv", [
        {"epoch": e, "train_loss": _loss(e)} for e in range(20)]))
    assert main(["diagnose", str(log), "--follow", "--idle", "0.2", "--fail-on",
                 "warning"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "20 rows read, 0 findings" in captured.err


class Writer:
    """A trainer that appends the next part of its log each time the follower sleeps (no
    threads, no timing): `parts` in order, then nothing."""

    def __init__(self, path: Path, parts: list[str]) -> None:
        self.path, self.parts, self.now = path, list(parts), 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.parts:
            _append(self.path, self.parts.pop(0))

    def clock(self) -> float:
        return self.now


def _run(path: Path, parts: list[str], target: Path | None = None, **kwargs: object
         ) -> tuple[object, list[str]]:
    writer = Writer(path, parts)
    seen: list[str] = []
    result = follow(target or path, NO_LR, idle=5.0, poll=1.0, report=lambda f: seen.append(
        f"{f.code.value}@{f.evidence.get('epoch')}"), clock=writer.clock, sleep=writer.sleep,
        **kwargs)  # type: ignore[arg-type]
    return result, seen


def test_a_line_half_written_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text("")
    rows = _lines("jsonl", [{"epoch": e, "train_loss": _loss(e)} for e in range(10)])
    bad = json.dumps({"epoch": 10, "train_loss": float("inf")}) + "\n"
    # The inf row arrives in two pieces; its first half is not a row (nor an error).
    result, seen = _run(log, [rows, bad[:12], bad[12:]], fail_on="error")
    assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    assert seen == ["nonfinite_loss@10.0"]


def test_a_column_first_logged_late_is_read(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text("")
    first = _lines("jsonl", [{"epoch": e, "train_loss": _loss(e)} for e in range(5)])
    later = "".join(json.dumps({"epoch": e, "train_loss": _loss(e), "grad_norm": 1.0})
                    + "\n" for e in range(5, 8))
    grad = json.dumps({"epoch": 8, "train_loss": _loss(8), "grad_norm": float("nan")}) + "\n"
    result, seen = _run(log, [first, later, grad], fail_on="error")
    assert seen == ["nonfinite_grad@8.0"]


def test_each_finding_once_and_idle_ends_it(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("")
    parts = [_lines("text", [{"epoch": e, "train_loss": _loss(e)} for e in range(12)]),
             _lines("text", [{"epoch": 12, "train_loss": round(4 * _loss(12), 4)}]),
             _lines("text", [{"epoch": e, "train_loss": _loss(e)} for e in range(13, 16)])]
    result, seen = _run(log, parts)
    assert result.outcome is Outcome.IDLE  # type: ignore[attr-defined]
    assert seen == ["loss_spike@12.0"]
    assert result.rows == 16  # type: ignore[attr-defined]


@pytest.mark.parametrize(("args", "message"), [
    (["--follow", "--idle", "0"], "--idle must be positive"),
    (["--follow", "--fail-on", "fatal"], "--fail-on must be one of error, warning"),
    (["--fail-on", "error"], "--fail-on needs --follow"),
])
def test_bad_follow_flags_are_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     args: list[str], message: str) -> None:
    log = tmp_path / "train.csv"
    log.write_text("epoch,train_loss\n0,1.0\n")
    assert main(["diagnose", str(log), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_target_that_never_appears_is_exit_2(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", str(tmp_path / "none.csv"), "--follow", "--idle", "0.1"]) == 2
    assert "did not appear" in capsys.readouterr().err


def test_a_run_directory_is_followed_through_its_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("learning_rate: 0.001\n")
    metrics = run / "metrics.jsonl"
    metrics.write_text("")
    rows = [{"epoch": e, "global_epoch": e, "train_loss": _loss(e), "val_loss": _loss(e)}
            for e in range(1, 6)]
    rows.append({"epoch": 6, "global_epoch": 6, "train_loss": math.nan, "val_loss": math.nan})
    result, seen = _run(metrics, [_lines("jsonl", rows)], target=run, fail_on="error")
    assert result.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    assert seen == ["nonfinite_loss@6.0"]

