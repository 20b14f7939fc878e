"""Imports only go down the layers of docs/ARCHITECTURE.md; trainer/ knows nothing above."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Lowest first; modules at the top of autotune/ (events, jsonio, errors) are the floor.
LAYERS = ["detect", "recovery", "diagnose", "search", "report", "integrations", "cli"]
IMPORT = re.compile(r"^\s*(?:from|import) (autotune|optuna)(?:\.(\w+))?", re.M)


def _rank(name: str) -> int:
    return LAYERS.index(name) if name in LAYERS else -1


def test_autotune_imports_only_go_down() -> None:
    upward = []
    for path in (ROOT / "autotune").rglob("*.py"):
        layer = path.relative_to(ROOT / "autotune").parts[0]
        if layer in ("__init__.py", "__main__.py"):
            continue  # the public API and the entry point stand above every layer
        for package, module in IMPORT.findall(path.read_text()):
            if package == "autotune" and _rank(module) > _rank(layer):
                upward.append(f"{path.relative_to(ROOT)} imports autotune.{module}")
    assert upward == []


def test_the_trainer_knows_nothing_of_autotune_or_optuna() -> None:
    found = [f"{p.relative_to(ROOT)}: {m[0]}" for p in (ROOT / "trainer").rglob("*.py")
             for m in IMPORT.findall(p.read_text())]
    assert found == []
