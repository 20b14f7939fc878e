"""`autotune.supervise` with a trainer that is not ours (tests/recovery/mlp_trainer.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import autotune
from autotune.cli import main
from autotune.events import EventKind, RunStatus
from tests.recovery.mlp_trainer import MLPTrainer

DIVERGING = {"learning_rate": 0.3, "grad_clip": 0.0}  # validation loss climbs at epoch 3


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_it_is_a_trainable() -> None:
    assert isinstance(MLPTrainer(), autotune.Trainable)


def test_a_diverging_rate_is_recovered_and_ends_stable_with_a_lower_rate(
        tmp_path: Path) -> None:
    result = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=6)
    assert result.status is RunStatus.COMPLETED
    assert result.recoveries == 1
    assert result.hparams["learning_rate"] == pytest.approx(0.3 / 3)
    assert result.hparams["grad_clip"] == 0.0  # a key recovery did not need to touch
    kinds = [e.kind for e in result.events]
    assert kinds == [EventKind.DIVERGED, EventKind.RECOVERED]
    assert result.events[0].reason == "loss_increase"
    effective = yaml.safe_load((tmp_path / "run" / "effective_config.yaml").read_text())
    assert effective["learning_rate"] == pytest.approx(0.1)
    started = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert started["learning_rate"] == 0.3 and started["recovery"] == "on"
    metrics = _lines(tmp_path / "run" / "metrics.jsonl")
    assert [m["global_epoch"] for m in metrics] == list(range(1, len(metrics) + 1))
    assert metrics[-1]["epoch"] == 6


def test_no_hyperparameter_it_lacks_is_changed(tmp_path: Path) -> None:
    result = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=6)
    assert set(result.hparams) == {"learning_rate", "grad_clip"}
    assert set(result.changes) == {"learning_rate"}


def test_recovery_off_stops_and_watch_only_warns(tmp_path: Path) -> None:
    off = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "off", epochs=6,
                             recovery="off")
    assert off.status is RunStatus.DIVERGED
    assert [e.kind for e in off.events] == [EventKind.DIVERGED]
    watched = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "watch", epochs=6,
                                 recovery="watch")
    assert watched.status is RunStatus.COMPLETED
    assert watched.hparams == MLPTrainer(**DIVERGING).hparams
    assert {e.kind for e in watched.events} == {EventKind.ALARM}
    assert watched.events[0].reason == "loss_increase" and watched.events[0].epoch == 3
    assert len(_lines(tmp_path / "watch" / "metrics.jsonl")) == 6


def test_supervise_again_continues_from_the_latest_checkpoint(tmp_path: Path) -> None:
    straight = autotune.supervise(MLPTrainer(), tmp_path / "straight", epochs=6)
    autotune.supervise(MLPTrainer(), tmp_path / "split", epochs=3)
    continued = autotune.supervise(MLPTrainer(), tmp_path / "split", epochs=6)
    assert continued.global_epochs == 6
    assert [e.kind for e in continued.events] == [EventKind.RESUMED]
    a = [m["val_loss"] for m in _lines(tmp_path / "straight" / "metrics.jsonl")]
    b = [m["val_loss"] for m in _lines(tmp_path / "split" / "metrics.jsonl")]
    assert b == pytest.approx(a, abs=1e-6)
    assert continued.best_val_loss == pytest.approx(straight.best_val_loss, abs=1e-6)


def test_a_fresh_trainer_continues_with_the_effective_rate(tmp_path: Path) -> None:
    first = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=6)
    again = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=8)
    assert again.hparams["learning_rate"] == pytest.approx(first.hparams["learning_rate"])
    assert again.global_epochs == first.global_epochs + 2


def test_a_scheduler_that_undoes_the_cut_is_named(tmp_path: Path) -> None:
    bad = autotune.supervise(MLPTrainer(learning_rate=0.1, honours_cuts=False),
                             tmp_path / "bad", epochs=6)
    alarms = [e for e in bad.events if e.kind is EventKind.ALARM]
    assert alarms and {e.reason for e in alarms} == {"lr_change_not_applied"}
    assert "scheduler undid the cut" in alarms[0].message
    assert alarms[0].evidence["applied"] == pytest.approx(alarms[0].evidence["before"])
    good = autotune.supervise(MLPTrainer(learning_rate=0.1), tmp_path / "good", epochs=6)
    assert good.recoveries == 1
    assert [e for e in good.events if e.kind is EventKind.ALARM] == []


def test_diagnose_reads_its_run_directory(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=6)
    capsys.readouterr()
    assert main(["diagnose", str(tmp_path / "run"), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert findings  # what it says is tested in tests/diagnose


def test_the_step_detector_knows_the_warmup_in_steps(tmp_path: Path) -> None:
    """A gradient jump inside the warmup is left to the run: the supervisor tells the step
    detector the warmup in steps (warmup epochs x the steps an epoch the trainer tells)."""
    from autotune.recovery.rundir import RunDir
    from autotune.recovery.supervisor import Supervisor

    class Told(MLPTrainer):  # says its warmup, as the ARC trainer does
        @property
        def hparams(self) -> dict[str, Any]:
            return {**super().hparams, "warmup_epochs": 2}

    trainer = Told(warmup_epochs=2)
    run = RunDir.create(tmp_path / "run", dict(trainer.hparams))
    supervisor = Supervisor(trainer, run, epochs=3)
    supervisor.begin_epoch()
    assert supervisor._thresholds is not None
    assert supervisor._thresholds.warmup_steps == 2 * MLPTrainer.steps_per_epoch


def test_extra_epochs_0_takes_the_replay_out_of_the_planned_epochs(tmp_path: Path) -> None:
    # The diverging rate is rolled back once: left to run, the replay adds epochs; with
    # extra_epochs 0 the run ends at its planned compute with its best model, completed.
    free = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "free", epochs=6)
    assert free.recoveries == 1 and free.global_epochs > 6
    capped = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "capped", epochs=6,
                                extra_epochs=0)
    assert capped.status is RunStatus.COMPLETED and capped.recoveries == 1
    assert capped.global_epochs == 6
    metrics = _lines(tmp_path / "capped" / "metrics.jsonl")
    assert metrics[-1]["global_epoch"] == 6 and metrics[-1]["epoch"] < 6
    surviving = [m["val_loss"] for m in metrics if m["global_epoch"] not in
                 {e.global_epoch for e in capped.events if e.kind is EventKind.DIVERGED}]
    assert capped.best_val_loss == pytest.approx(min(surviving))
    config = yaml.safe_load((tmp_path / "capped" / "config.yaml").read_text())
    assert config["extra_epochs"] == 0  # a resume keeps the cap
    two = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "two", epochs=6,
                             extra_epochs=2)
    assert two.global_epochs == min(free.global_epochs, 8)


@pytest.mark.parametrize("recovery", ["on", "off"])
def test_a_reason_in_alarm_only_raises_one_alarm_and_changes_nothing(
        tmp_path: Path, recovery: str) -> None:
    # The diverging rate is called at epoch 3 and again at the epochs after: one alarm,
    # whatever the mode, and the run trains its planned epochs with its own rate.
    result = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "run", epochs=6,
                                recovery=recovery, alarm_only=["loss_increase"])
    assert result.status is RunStatus.COMPLETED and result.recoveries == 0
    assert [(e.kind, e.reason, e.epoch) for e in result.events] == [
        (EventKind.ALARM, "loss_increase", 3)]
    assert result.hparams == MLPTrainer(**DIVERGING).hparams
    assert result.global_epochs == 6
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["alarm_only"] == ["loss_increase"]  # a resume keeps it
    other = autotune.supervise(MLPTrainer(**DIVERGING), tmp_path / "other", epochs=6,
                               recovery=recovery, alarm_only="overfitting")
    assert other.events[0].kind is EventKind.DIVERGED  # other reasons are acted on
