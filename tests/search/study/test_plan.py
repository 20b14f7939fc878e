"""A study's plan: bad flags and spaces are exit 2, nothing written
(autotune/search/study/plan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune import cli


@pytest.mark.parametrize(("space", "needle"), [
    ({"learning_rat": {"low": 1e-4, "high": 1e-3}}, "learning_rate"),
    ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "low 0.01 > high"),
    ({"batch_size": {"choices": []}}, "choices is empty"),
    ({"learning_rate": {"low": -1.0, "high": 1e-3, "log": True}}, "low must be > 0"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3}, "epochs": 0}, "epochs must be >= 1"),
])
def test_bad_space_files_exit_2_writing_nothing(workdir: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                space: dict[str, Any], needle: str) -> None:
    Path("bad.yaml").write_text(yaml.safe_dump(space))
    assert cli.main(["search", "--trials", "2", "--space", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not Path("studies").exists()


@pytest.mark.parametrize("argv", [
    ["search", "--trials", "0"],
    ["search", "--jobs", "0"],
    ["search", "--space", "nowhere.yaml"],
    ["search", "--profile", "huge"],
    ["search", "--storage", "postgresql://me:s3cret@127.0.0.1:9/db"],
    ["export", "--format", "yaml"],
    ["export", "--format", "toml"],
    ["report", "--study", "nope"],
    ["resume", "--study", "nope"],
])
def test_bad_input_exit_2(workdir: Path, capsys: pytest.CaptureFixture[str],
                          argv: list[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err
    assert not Path("studies/autotune.db").exists()
