"""README's "Your own trainer" example runs as printed and does what the text says."""

from __future__ import annotations

import math
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


def _example(marker: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return next(b for b in blocks if marker in b)


def test_the_lightning_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning.pytorch as pl
    import torch

    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example("autotune.integrations.lightning"), "README.md", "exec"), scope)  # noqa: S102
    result = scope["callback"].result
    assert result.status == "completed" and result.recoveries >= 1
    assert result.hparams["learning_rate"] <= 1.0
    assert [(e.kind, e.reason) for e in result.events][:2] == [
        ("diverged", "nonfinite_grad"), ("recovered", "nonfinite_grad")]
    assert result.events[0].step is not None  # caught at the step, before the update
    assert math.isfinite(float(scope["trainer"].callback_metrics["val_loss"]))
    # What the text says happens without the callback.
    torch.manual_seed(0)
    plain = pl.Trainer(max_epochs=8, logger=False, enable_checkpointing=False,
                       enable_progress_bar=False)
    plain.fit(scope["Regression"](lr=3.0), scope["train"], scope["val"])
    assert math.isnan(float(plain.callback_metrics["val_loss"]))


def test_the_transformers_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_example("autotune.integrations.transformers"), "README.md", "exec"), scope)  # noqa: S102
    result = scope["callback"].result
    assert result.status == "completed" and result.recoveries >= 1
    assert result.hparams["learning_rate"] < 2.0
    assert [(e.kind, e.rolled_back_to) for e in result.events][:2] == [
        ("diverged", None), ("recovered", 0)]
    assert scope["trainer"].evaluate()["eval_loss"] < math.log(32)


@pytest.mark.slow
def test_the_own_trainer_search_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import optuna
    from optuna.trial import TrialState

    from autotune import cli

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    trainer = next(b for b in blocks if "autotune.supervise(MLPTrainer" in b)
    search = next(b for b in blocks if "autotune.objective(build" in b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    scope: dict = {}
    exec(compile(trainer, "README.md", "exec"), scope)  # noqa: S102 - our own README
    exec(compile(search, "README.md", "exec"), scope)  # noqa: S102
    study = optuna.load_study(study_name="mlp", storage="sqlite:///mlp.db")
    trials = study.get_trials()
    assert len([t for t in trials if t.state in (TrialState.COMPLETE,
                                                 TrialState.PRUNED)]) == 6
    first = trials[0]  # 0.3's rise is called overfitting: in a search an alarm, it runs on
    assert first.params == {"learning_rate": 0.3} and first.user_attrs["stable"]
    assert first.user_attrs["divergences"] == 0
    assert [(e["kind"], e["reason"], e["epoch"]) for e in first.user_attrs["events"]] == [
        ("alarm", "overfitting", 2)]
    assert first.user_attrs["effective_config"]["learning_rate"] == 0.3
    assert first.value < scope["result"].best_val_loss  # below the single run's salvage
    assert first.constraints == {"diverged": 0.0}
    assert study.user_attrs["confirmation"]["trial"] == study.best_trial.number
    capsys.readouterr()
    assert cli.main(["export", "--study", "mlp", "--storage", "sqlite:///mlp.db",
                     "--format", "yaml"]) == 0
    assert "learning_rate:" in capsys.readouterr().out
