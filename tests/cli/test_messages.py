"""Messages that say what is true: an interrupted command that saved nothing does not
point to `resume`."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.cli.app import EXIT_INTERRUPTED, interrupted_message, main
from autotune.errors import Interrupted


@pytest.mark.parametrize(("argv", "resumable"), [
    (["train", "--epochs", "2"], True), (["resume", "run"], True), (["search"], True),
    (["diagnose", "log.csv"], False), (["export", "--format", "csv"], False),
    (["report"], False)])
def test_only_what_saved_a_state_points_to_resume(argv: list[str], resumable: bool) -> None:
    assert ("autotune resume" in interrupted_message(argv)) is resumable


def test_an_interrupted_diagnose_does_not_tell_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import autotune.diagnose

    def interrupted(*args: object, **kwargs: object) -> None:
        raise Interrupted("SIGINT")  # what the CLI's signal handler raises

    monkeypatch.setattr(autotune.diagnose, "diagnose_report", interrupted)
    (tmp_path / "log.csv").write_text("epoch,loss\n1,2.0\n")
    assert main(["diagnose", str(tmp_path / "log.csv")]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" not in err
