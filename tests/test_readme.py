"""README's "Your own trainer" example runs as printed and does what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_own_trainer_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if "autotune.supervise(MLPTrainer" in b)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 - our own README
    result = scope["result"]
    assert result.status == "completed" and result.recoveries == 1
    assert result.hparams == {"learning_rate": pytest.approx(0.1), "grad_clip": 0.0}
    assert [(e.kind, e.epoch) for e in result.events] == [("diverged", 2), ("recovered", 1)]
    assert capsys.readouterr().out.startswith("RunStatus.COMPLETED {'learning_rate': 0.09")
