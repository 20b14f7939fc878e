"""compile_mode: validated, passed to torch.compile on CUDA only, CUDA graphs marked per
step (trainer/config.py, trainer/loop.py compiled_forward); no GPU needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from autotune.cli.app import main
from trainer.config import COMPILE_MODES, TrainConfig, from_dict
from trainer.data import ArcData
from trainer.errors import ConfigError
from trainer.inject import Injector
from trainer.loop import Trainer, compiled_forward


def test_default_keeps_todays_behaviour() -> None:
    config = TrainConfig()
    assert (config.compile, config.compile_mode) == (False, "default")
    assert from_dict({}).to_dict()["compile_mode"] == "default"  # and old run files load


@pytest.mark.parametrize("mode", COMPILE_MODES)
def test_every_mode_is_accepted_with_compile(mode: str) -> None:
    assert from_dict({"compile": True, "compile_mode": mode}).compile_mode == mode


@pytest.mark.parametrize(("values", "message"), [
    ({"compile": True, "compile_mode": "fast"},
     "compile_mode must be one of default, reduce-overhead, max-autotune, "
     "max-autotune-no-cudagraphs but got 'fast'."),
    ({"compile": True, "compile_mode": 3}, "compile_mode must be a non-empty string but got 3."),
    ({"compile_mode": "reduce-overhead"},
     "compile_mode 'reduce-overhead' takes effect only with compile: true; set compile=true "
     "too, or leave compile_mode default."),
])
def test_bad_values_name_the_value_and_what_is_allowed(values: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(values)
    assert str(info.value) == message


def test_the_cli_says_it_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--set", "compile=true", "--set", "compile_mode=fastest"]) == 2
    err = capsys.readouterr().err
    assert "compile_mode must be one of default, reduce-overhead" in err
    assert "'fastest'" in err and err.strip().count("\n") == 0
    assert not Path("runs").exists()


class _Compile:
    """Stands in for torch.compile: records how it was called, returns the model."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        self.calls.append(kwargs)
        return model


@pytest.mark.parametrize(("mode", "graphs"), [
    ("default", False), ("reduce-overhead", True), ("max-autotune", True),
    ("max-autotune-no-cudagraphs", False),
])
def test_cuda_compiles_in_the_mode(monkeypatch: pytest.MonkeyPatch, mode: str,
                                   graphs: bool) -> None:
    fake = _Compile()
    monkeypatch.setattr(torch, "compile", fake)
    model = torch.nn.Linear(2, 2)
    config = from_dict({"compile": True, "compile_mode": mode})
    assert compiled_forward(model, config, torch.device("cuda")) == (model, graphs)
    assert fake.calls == [{"dynamic": False, "mode": mode}]


@pytest.mark.parametrize(("values", "device"), [
    ({"compile": True, "compile_mode": "reduce-overhead"}, "cpu"),  # CUDA only
    ({}, "cuda"),                                                   # compile off
])
def test_no_compile_off_cuda_or_when_off(monkeypatch: pytest.MonkeyPatch,
                                         values: dict[str, Any], device: str) -> None:
    fake = _Compile()
    monkeypatch.setattr(torch, "compile", fake)
    model = torch.nn.Linear(2, 2)
    assert compiled_forward(model, from_dict(values), torch.device(device)) == (model, False)
    assert fake.calls == []


def test_the_cpu_trainer_is_unchanged_by_a_mode(small_config: TrainConfig,
                                                small_data: ArcData,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    plain = Trainer(small_config, small_data, "cpu", Injector())
    moded = Trainer(small_config.replace(compile=True, compile_mode="reduce-overhead"),
                    small_data, "cpu", Injector())
    assert moded.forward is moded.model and not moded._graphs
    assert plain.train_epoch()["train_loss"] == moded.train_epoch()["train_loss"]
    assert marks == []


def test_graph_replay_marks_every_training_step_and_no_evaluation(
        small_config: TrainConfig, small_data: ArcData,
        monkeypatch: pytest.MonkeyPatch) -> None:
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    trainer = Trainer(small_config, small_data, "cpu", Injector())
    trainer._graphs = True  # as compiled_forward sets it on CUDA in a CUDA-graph mode
    trainer.train_epoch()
    assert len(marks) == trainer.steps_per_epoch
    trainer.evaluate()
    assert len(marks) == trainer.steps_per_epoch
