"""Fault injection: exact steps and rate faults (trainer/inject.py)."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from trainer.errors import ConfigError
from trainer.inject import BLOCK, HOLD_ENV, Injector


def _hits(injector: Injector, kind: str, steps: range) -> list[int]:
    probe = torch.tensor(1.0)
    if kind == "nan_loss":
        return [s for s in steps if math.isnan(float(injector.on_loss(s, probe)))]
    return [s for s in steps if float(injector.on_loss(s, probe)) == 100.0]


def test_exact_steps_fire_once_and_only_there() -> None:
    injector = Injector.parse("nan_loss@3,spike@7")
    assert _hits(injector, "nan_loss", range(20)) == [3]
    assert _hits(injector, "spike", range(20)) == [7]


def test_the_same_seed_meets_the_same_faults_whatever_is_asked_first() -> None:
    forward = Injector.parse("nan_loss~0.01,spike~0.02", seed=5)
    backward = Injector.parse("spike~0.02,nan_loss~0.01", seed=5)
    steps = range(3 * BLOCK)
    first = _hits(forward, "spike", steps)
    # Asked in another order (a rollback asks nothing again, but another arm might start
    # later): the same steps.
    assert sorted(_hits(backward, "spike", reversed(steps))) == first
    assert first != _hits(Injector.parse("spike~0.02", seed=6), "spike", steps)
    assert first != _hits(Injector.parse("spike~0.02", seed=5, stream=1), "spike", steps)
    assert _hits(forward, "nan_loss", steps) == _hits(backward, "nan_loss", steps)


@pytest.mark.parametrize("p", [0.001, 0.003, 0.05])
def test_the_rate_is_honoured(p: float) -> None:
    n = 50 * BLOCK
    hits = len(_hits(Injector.parse(f"nan_loss~{p}", seed=1), "nan_loss", range(n)))
    expected, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(hits - expected) < 4 * sd  # binomial, four standard deviations


def test_a_rate_of_zero_is_no_fault_and_the_injector_is_falsy_without_faults() -> None:
    assert not Injector.parse("")
    assert not Injector.parse("nan_loss~0")
    assert Injector.parse("nan_loss~0.5")


@pytest.mark.parametrize("spec", ["nan_loss~2", "nan_loss~x", "boom~0.1", "nan_loss@x",
                                  "nan_loss"])
def test_bad_items_name_the_item(spec: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(spec))):
        Injector.parse(spec)


def test_hold_parks_the_step_until_its_file_is_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOLD_ENV, str(tmp_path))
    injector = Injector.parse("hold@2")
    injector.on_step_start(1)  # not that step: passes at once
    passed = threading.Event()
    worker = threading.Thread(target=lambda: (injector.on_step_start(2), passed.set()))
    worker.start()
    mark = tmp_path / f"held-{os.getpid()}-2"
    while not mark.exists():  # the event a test waits for
        assert worker.is_alive()
        time.sleep(0.01)
    assert not passed.is_set()  # parked while the file is there
    mark.unlink()
    worker.join(timeout=60)
    assert passed.is_set()
    (tmp_path / f"free-{os.getpid()}").touch()  # released for good: no later hold
    injector.on_step_start(2)
    assert not mark.exists()


@pytest.mark.parametrize("spec", ["hold@3", "hold~0.5"])
def test_hold_needs_its_folder_and_an_exact_step(
        spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOLD_ENV, raising=False)
    with pytest.raises(ConfigError, match=re.escape(repr(spec))):
        Injector.parse(spec)
