"""autotune.integrations.lightning: a real Lightning fit on the CPU, a model built here."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from autotune.diagnose import FindingCode, diagnose_target
from autotune.errors import ConfigError
from autotune.events import EventKind, RunStatus
from autotune.integrations.lightning import RecoveryCallback
from autotune.search.pruner import default_pruner
from tests.integrations.common import (
    DIVERGING_LR,
    STABLE_LR,
    STEPS_PER_EPOCH,
    lines,
    network,
    regression,
    warmup_then_decay,
)

EPOCHS = 6

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", module="lightning")


class Regression(pl.LightningModule):
    """An MLP on noisy linear data, SGD under a warmup-decay LambdaLR stepped per step.

    `nan_at_call`: the training step of that call (1-based) returns NaN, once;
    `spike_at_call`: 1000 times its loss, once. `nan_at_validation`: that validation
    (1-based) logs a NaN loss, once.
    """

    def __init__(self, lr: float, nan_at_call: int | None = None,
                 nan_at_validation: int | None = None,
                 spike_at_call: int | None = None) -> None:
        super().__init__()
        self.net = network()
        self.lr = lr
        self.nan_at_call, self.nan_at_validation = nan_at_call, nan_at_validation
        self.spike_at_call = spike_at_call
        self.calls = self.validations = 0
        self.clip_values: list[float | None] = []  # what Lightning clipped with, per step

    def training_step(self, batch: list[torch.Tensor], index: int) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.calls == self.spike_at_call:
            return loss * 1000.0
        return loss * math.nan if self.calls == self.nan_at_call else loss

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        self.clip_values.append(gradient_clip_val)
        super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                            gradient_clip_algorithm)

    def validation_step(self, batch: list[torch.Tensor], index: int) -> None:
        self.validations += 1
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("val_loss", loss * math.nan if self.validations == self.nan_at_validation
                 else loss)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_then_decay(10, EPOCHS * STEPS_PER_EPOCH))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _fit(module: Regression, callback: RecoveryCallback | None) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=EPOCHS, callbacks=[callback] if callback else [],
                         accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    torch.manual_seed(1)  # the training batches' order
    train, val = regression(320, 1), regression(128, 2)
    trainer.fit(module, DataLoader(TensorDataset(*train), batch_size=16, shuffle=True),
                DataLoader(TensorDataset(*val), batch_size=128))
    return trainer


def _val(trainer: pl.Trainer) -> float:
    return float(trainer.callback_metrics["val_loss"])


def test_a_diverging_rate_ends_stable_with_the_callback_and_not_without(
        tmp_path: Path) -> None:
    assert math.isnan(_val(_fit(Regression(DIVERGING_LR), None)))

    callback = RecoveryCallback(tmp_path / "run")
    trainer = _fit(Regression(DIVERGING_LR), callback)
    result = callback.result
    assert result is not None and result.status is RunStatus.COMPLETED
    assert result.recoveries >= 1 and _val(trainer) < 0.1
    assert result.hparams["learning_rate"] < DIVERGING_LR
    # The run directory explains it, as any autotune run's does.
    run = tmp_path / "run"
    assert {"config.yaml", "effective_config.yaml", "metrics.jsonl", "events.jsonl",
            "summary.json"} <= {p.name for p in run.iterdir()}
    assert [e["kind"] for e in lines(run / "events.jsonl")][:2] == ["diverged", "recovered"]
    assert FindingCode.RECOVERED in {f.code for f in diagnose_target(run)}


def test_a_nan_at_a_known_step_is_caught_before_the_update_and_recovered(
        tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    module = Regression(STABLE_LR, nan_at_call=27)
    trainer = _fit(module, callback)
    result = callback.result
    assert result is not None and result.status is RunStatus.COMPLETED
    diverged, recovered = result.events
    assert (diverged.kind, diverged.reason, diverged.step) == (
        EventKind.DIVERGED, "nonfinite_loss", 26)  # the 27th step, counted from 0
    # Step 26 is in epoch 2; the last checkpoint before it is epoch 1's.
    assert (recovered.kind, recovered.rolled_back_to) == (EventKind.RECOVERED, 1)
    assert recovered.changes == {"learning_rate": [STABLE_LR, pytest.approx(STABLE_LR / 3)]}
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert _val(trainer) < 0.1


def test_the_rate_after_a_recovery_is_the_cut_rate_under_lightnings_scheduler(
        tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    _fit(Regression(STABLE_LR, nan_at_validation=3), callback)
    assert callback.result is not None
    assert [(e.kind, e.epoch) for e in callback.result.events] == [
        (EventKind.DIVERGED, 3), (EventKind.RECOVERED, 2)]
    undone, replayed = [r for r in lines(tmp_path / "run" / "metrics.jsonl")
                        if r["epoch"] == 3]
    assert replayed["step"] == undone["step"]  # the same point of the schedule
    assert replayed["lr"] == pytest.approx(undone["lr"] / 3, rel=1e-9)
    assert not [e for e in callback.result.events if e.kind is EventKind.ALARM]


def test_a_spike_turns_clipping_on_in_lightnings_own_setting(tmp_path: Path) -> None:
    callback = RecoveryCallback(tmp_path / "run")
    module = Regression(STABLE_LR, spike_at_call=50)
    trainer = _fit(module, callback)
    assert callback.result is not None
    diverged, recovered = callback.result.events
    assert (diverged.reason, diverged.step) == ("loss_spike", 49)
    # The spike ladder's first rung: skip the batches (a key Lightning's callback does not
    # have, so passed over) and clipping on.
    assert recovered.changes == {"grad_clip": [0.0, 1.0]}
    assert trainer.gradient_clip_val == 1.0
    assert module.clip_values[:49] == [None] * 49 and module.clip_values[-1] == 1.0


def test_watch_only_alarms_and_off_stops(tmp_path: Path) -> None:
    watch = RecoveryCallback(tmp_path / "watch", recovery="watch")
    trainer = _fit(Regression(DIVERGING_LR), watch)
    assert watch.result is not None and watch.result.status is RunStatus.COMPLETED
    assert {e.kind for e in watch.result.events} == {EventKind.ALARM}
    assert math.isnan(_val(trainer)) and trainer.current_epoch == EPOCHS

    off = RecoveryCallback(tmp_path / "off", recovery="off")
    trainer = _fit(Regression(DIVERGING_LR), off)
    assert off.result is not None and off.result.status is RunStatus.DIVERGED
    assert [e.kind for e in off.result.events] == [EventKind.DIVERGED]
    assert trainer.current_epoch < EPOCHS - 1


def test_inside_an_optuna_study(tmp_path: Path) -> None:
    study = optuna.create_study(pruner=default_pruner())
    study.enqueue_trial({"lr": DIVERGING_LR, "budget": 4})
    study.enqueue_trial({"lr": DIVERGING_LR, "budget": 0})

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 0.01, 5.0, log=True)
        budget = trial.suggest_int("budget", 0, 4)
        callback = RecoveryCallback(tmp_path / f"trial{trial.number}", max_recoveries=budget,
                                    trial=trial)
        _fit(Regression(lr), callback)
        assert callback.result is not None
        return callback.result.best_val_loss

    study.optimize(objective, n_trials=2)
    recovered, spent = study.trials
    assert recovered.state is optuna.trial.TrialState.COMPLETE and recovered.value < 0.1
    assert recovered.user_attrs["recoveries"] >= 1 and recovered.user_attrs["stable"]
    steps = list(recovered.intermediate_values)
    assert steps == sorted(set(steps))  # global epochs: never back, never twice
    assert "timeline" in recovered.user_attrs  # the pruner judges the surviving epochs
    assert spent.state is optuna.trial.TrialState.PRUNED
    assert spent.user_attrs["pruned_reason"].startswith("recovery budget spent")


def test_bad_arguments_and_a_missing_lightning_fail_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="recovery must be on, off or watch"):
        RecoveryCallback(tmp_path / "run", recovery="sometimes")
    with pytest.raises(ConfigError, match="max_recoveries must be >= 0"):
        RecoveryCallback(tmp_path / "run", max_recoveries=-1)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "autotune.integrations.lightning")
    with pytest.raises(ImportError, match=r"pip install 'autotune\[lightning\]'"):
        import autotune.integrations.lightning  # noqa: F401
