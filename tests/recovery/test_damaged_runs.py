"""Damaged files of a run: one line naming the file (exit 2) or a finding, no traceback;
a torn last line of a JSON Lines file never swallows the record appended after it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import autotune
from autotune.cli import main
from autotune.errors import ConfigError
from autotune.jsonio import append_jsonl, read_jsonl
from autotune.recovery.rundir import RunDir
from tests.recovery.mlp_trainer import MLPTrainer


def test_a_record_appended_after_a_torn_line_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    append_jsonl(path, {"kind": "diverged", "epoch": 1})
    with open(path, "a") as f:
        f.write('{"kind": "recov')  # the process was killed mid-write
    append_jsonl(path, {"kind": "resumed", "epoch": 2})
    assert read_jsonl(path) == [{"kind": "diverged", "epoch": 1},
                                {"kind": "resumed", "epoch": 2}]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    autotune.supervise(MLPTrainer(), run, epochs=3)
    return run


def _summary(run: Path) -> None:
    (run / "summary.json").write_text('{"status": "completed", "best_val')


def _event_kind(run: Path) -> None:
    with open(run / "events.jsonl", "a") as f:
        f.write(json.dumps({"kind": "exploded", "epoch": 2}) + "\n")


def _metrics(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    del record["global_epoch"]
    lines[1] = json.dumps(record)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


DAMAGES: list[tuple[str, Callable[[Path], None], str]] = [
    ("summary", _summary, r"summary.json' is damaged"),
    ("event_kind", _event_kind, r"events.jsonl': event \d+ cannot be read \(kind 'exploded'"),
    ("metrics", _metrics, r"metrics.jsonl': record 2 has no integer global_epoch"),
]


@pytest.mark.parametrize(("case", "damage", "message"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_continuing_a_damaged_run_names_the_file(
        case: str, damage: Callable[[Path], None], message: str, finished: Path,
        tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run)
    with pytest.raises(ConfigError, match=message):  # (the same epochs: is it finished?)
        autotune.supervise(MLPTrainer(), run, epochs=3 if case == "summary" else 5)


@pytest.mark.parametrize(("case", "damage", "message"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_diagnose_of_a_damaged_run_is_a_line_or_findings_never_a_traceback(
        case: str, damage: Callable[[Path], None], message: str, finished: Path,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    damage(run)
    code = main(["diagnose", str(run)])
    captured = capsys.readouterr()
    assert code in (0, 2), captured.err
    assert "Traceback" not in captured.err
    if code == 2:
        assert len(captured.err.strip().splitlines()) == 1


def test_summary_reads_back_what_was_written(finished: Path) -> None:
    summary = RunDir(finished).summary()
    assert summary is not None and summary["status"] == "completed"
