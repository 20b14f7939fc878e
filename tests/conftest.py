"""Shared fixtures: a small slice of the real ARC-AGI-1 data, fast on two CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

# Tests compare runs bit for bit: one torch thread everywhere, child processes included,
# keeps the kernels' order fixed and leaves the supervisor's thread sharing
# (autotune/recovery/threads.py) nothing to change.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch
import yaml

from trainer.config import TrainConfig, resolve
from trainer.data import ArcData, build_data

# 40 tasks a split, grids up to 10x10: about 200 training pairs, well under a second an epoch.
SMALL = {"max_tasks": 40, "epochs": 4, "batch_size": 32, "learning_rate": 3e-3}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tests compare runs bit for bit; a fixed thread count keeps the kernels' order fixed.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_config() -> TrainConfig:
    return resolve("tiny", {}, SMALL)


@pytest.fixture(scope="session")
def small_data(small_config: TrainConfig) -> ArcData:
    return build_data(small_config)


def small_set_args(**extra: object) -> list[str]:
    """`--set` arguments for the CLI that select the small configuration."""
    items = {**SMALL, **extra}
    return [arg for k, v in items.items() for arg in ("--set", f"{k}={v}")]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            request: pytest.FixtureRequest) -> Path:
    """A fresh working folder (cwd) with the test module's SPACE (or the search tests'
    small space) as space.yaml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    from tests.search.common import SPACE

    space = getattr(request.module, "SPACE", SPACE)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    return tmp_path
