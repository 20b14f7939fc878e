"""Run directories, bad input and the command: what `autotune diagnose TARGET` does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from autotune.diagnose import (
    Intended,
    diagnose_target,
    read_log,
    read_run,
    smoothing_floor,
)
from autotune.errors import ConfigError
from tests.diagnose.scenarios import (
    Rows,
    codes,
    flat_after_warmup,
    healthy,
    write_csv,
    write_jsonl,
)
from trainer.config import TrainConfig
from trainer.schedule import lr_at_epoch

# ------------------------------------------------------------------ run directories


def write_run(root: Path, records: Rows, events: Rows, **config: Any) -> Path:
    root.mkdir()
    cfg = TrainConfig().replace(**config)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_jsonl(root / "metrics.jsonl", records)
    write_jsonl(root / "events.jsonl", events)
    return root


RUN_CONFIG: dict[str, Any] = {"learning_rate": 1e-3, "warmup_epochs": 1.0,
                              "schedule": "cosine", "epochs": 8}
LOWERED = 1e-3 / 3
RECOVERY_EVENTS: Rows = [
    {"kind": "diverged", "reason": "loss_increase", "epoch": 4, "global_epoch": 4,
     "rolled_back_to": None, "changes": {}},
    {"kind": "recovered", "reason": "loss_increase", "epoch": 4, "global_epoch": 4,
     "rolled_back_to": 3, "changes": {"learning_rate": [1e-3, LOWERED]}},
]


def recovered_metrics(**config: Any) -> Rows:
    """Epochs 1-4, a divergence at 4, a rollback to 3 with lr x 1/3, then epochs 4-8."""
    before = TrainConfig().replace(**{**RUN_CONFIG, **config})
    after = before.replace(learning_rate=LOWERED)
    train = [2.0, 1.6, 1.3, 1.9, 1.2, 1.1, 1.0, 0.95, 0.92]
    val = [1.9, 1.5, 1.25, 1.8, 1.2, 1.1, 1.05, 1.0, 0.98]
    rows = []
    for g in range(1, 10):
        epoch = g if g <= 4 else g - 1
        step = 10 * epoch
        cfg = before if g <= 4 else after
        rows.append({"epoch": epoch, "global_epoch": g, "step": step,
                     "train_loss": train[g - 1], "val_loss": val[g - 1],
                     "val_cell_acc": 0.5, "val_exact": 0.0,
                     "lr": lr_at_epoch(step / 10, cfg), "grad_norm": 0.8, "time_s": 1.5})
    return rows


def test_recovered_run_lowered_lr_is_not_a_mismatch(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", recovered_metrics(), RECOVERY_EVENTS, **RUN_CONFIG)
    assert read_run(run).steps_per_epoch == 10
    findings = diagnose_target(run, None, None, None, None)
    assert codes(findings) == ["healthy", "recovered"]
    recovered = findings[1]
    assert recovered.evidence["recoveries"] == 1
    assert recovered.evidence["effective_changes"] == {"learning_rate": pytest.approx(LOWERED)}
    assert "rolled back to epoch 3" in recovered.message
    # The change as autotune.events.describe_changes writes it (one set of formatters).
    assert "learning_rate 0.001 -> 0.0003333" in recovered.message


def test_run_without_its_events_shows_the_lowered_lr_as_a_mismatch(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", recovered_metrics(), [], **RUN_CONFIG)
    findings = diagnose_target(run, None, None, None, None)
    assert codes(findings)[0] == "lr_schedule_mismatch"
    assert findings[0].evidence["alignment"] == "step"
    assert findings[0].evidence["pattern"] == "lowered_midway"
    assert "then drops below it from epoch 4 (global epoch 5) on" in findings[0].message
    # Epochs 5 and 6 after the rollback; near the floor 3x off is within 10% of the peak.
    assert findings[0].evidence["records_off"] == 3


def test_run_metrics_with_a_half_written_last_line_are_read(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", recovered_metrics(), RECOVERY_EVENTS, **RUN_CONFIG)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 9, "global_epoch": 10, "ste')  # killed while appending
    assert len(read_run(run).history) == 9


def test_run_flags_override_config(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", recovered_metrics(), RECOVERY_EVENTS, **RUN_CONFIG)
    findings = diagnose_target(run, 1e-2, None, None, None)
    assert codes(findings)[0] == "lr_schedule_mismatch"


def test_run_with_smoothing_uses_twelve_classes(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", recovered_metrics(label_smoothing=0.1),
                    RECOVERY_EVENTS, **RUN_CONFIG, label_smoothing=0.1)
    findings = diagnose_target(run, None, None, None, None)
    assert codes(findings) == ["smoothing_floor", "recovered"]
    assert findings[0].evidence["num_classes"] == 12
    assert findings[0].evidence["floor"] == pytest.approx(smoothing_floor(0.1, 12))


def test_gave_up_run_is_an_error_with_a_lower_lr(tmp_path: Path) -> None:
    events = [*RECOVERY_EVENTS,
              {"kind": "diverged", "reason": "nonfinite_loss", "epoch": 8, "global_epoch": 9,
               "rolled_back_to": None, "changes": {}},
              {"kind": "gave_up", "reason": "nonfinite_loss", "epoch": 8, "global_epoch": 9,
               "rolled_back_to": None, "changes": {}}]
    run = write_run(tmp_path / "run", recovered_metrics(), events, **RUN_CONFIG)
    findings = diagnose_target(run, None, None, None, None)
    assert codes(findings) == ["gave_up", "recovered"]
    assert findings[0].severity == "error"
    assert "after 1 recovery," in findings[0].message
    assert "learning_rate 1.1e-4 (1/3 of 3.3e-4)" in findings[0].fix


def test_divergence_with_recovery_off_is_an_error(tmp_path: Path) -> None:
    event = {"kind": "diverged", "reason": "nonfinite_loss", "epoch": 4, "global_epoch": 4,
             "step": 37, "rolled_back_to": None, "changes": {}}
    run = write_run(tmp_path / "run", recovered_metrics()[:3], [event], **RUN_CONFIG)
    [finding] = diagnose_target(run, None, None, None, None)
    assert finding.code == "diverged"
    assert "diverged at global epoch 4, step 37 (nonfinite_loss)" in finding.message
    assert finding.evidence["suggested_learning_rate"] == pytest.approx(1e-3 / 3)
    assert "autotune resume" in finding.fix


# --------------------------------------------------------------------- bad inputs


def _missing_column(tmp: Path) -> None:
    (tmp / "log.csv").write_text("epoch,lr\n0,1.0\n")
    read_log(tmp / "log.csv")


def _not_a_run_dir(tmp: Path) -> None:
    (tmp / "empty").mkdir()
    diagnose_target(tmp / "empty", None, None, None, None)


def _unreadable(tmp: Path) -> None:
    (tmp / "log.csv").write_bytes(b"\xff\xfe\x00\x81binary")
    read_log(tmp / "log.csv")


def _unknown_schedule(tmp: Path) -> None:
    write_csv(tmp / "log.csv", healthy()[0])
    diagnose_target(tmp / "log.csv", 1e-3, None, "step", None)


def _unknown_schedule_without_lr(tmp: Path) -> None:
    write_csv(tmp / "log.csv", healthy()[0])
    diagnose_target(tmp / "log.csv", None, None, "exp", None)


def _not_a_number(tmp: Path) -> None:
    (tmp / "log.csv").write_text("epoch,train_loss,lr\n0,1.0,1e-3\n1,0.9,fast\n")
    read_log(tmp / "log.csv")


def _bad_json_line(tmp: Path) -> None:
    (tmp / "log.jsonl").write_text('{"epoch": 0, "loss": 1.0, "lr": 1e-3}\n{oops\n'
                                   '{"epoch": 1, "loss": 1.0, "lr": 1e-3}\n')
    read_log(tmp / "log.jsonl")


def _missing_target(tmp: Path) -> None:
    diagnose_target(tmp / "nope.csv", 1e-3, None, None, None)


def _bad_config_key(tmp: Path) -> None:
    run = write_run(tmp / "run", recovered_metrics(), [], **RUN_CONFIG)
    (run / "config.yaml").write_text("learning_rat: 0.001\n")
    read_run(run)


def _negative_lr(tmp: Path) -> None:
    Intended(-1.0, 1.0, "cosine", 10)


BAD_INPUTS: list[tuple[str, Callable[[Path], None], str]] = [
    ("missing column", _missing_column,
     r"log\.csv: missing column 'train_loss'; a training log needs a loss column \(found: "
     r"epoch, lr\); name yours with --column train_loss=THEIR_NAME"),
    ("not a run dir", _not_a_run_dir,
     r"empty is not a run directory: it has no config\.yaml and no metrics\.jsonl"),
    ("unreadable file", _unreadable, r"log\.csv cannot be read: it is not UTF-8 text"),
    ("unknown schedule", _unknown_schedule,
     r"schedule must be one of cosine, linear, constant but got 'step'"),
    ("unknown schedule, no lr", _unknown_schedule_without_lr,
     r"schedule must be one of cosine, linear, constant but got 'exp'"),
    ("not a number", _not_a_number, r"line 3: lr is 'fast', not a number"),
    ("bad json line", _bad_json_line, r"log\.jsonl: line 2 is not valid JSON"),
    ("missing target", _missing_target, r"nope\.csv does not exist"),
    ("bad config key", _bad_config_key, r"unknown configuration key 'learning_rat'"),
    ("negative lr", _negative_lr, r"learning_rate must be > 0"),
]


@pytest.mark.parametrize(("name", "action", "pattern"), BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_a_one_line_config_error(tmp_path: Path, name: str,
                                              action: Callable[[Path], None],
                                              pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as info:
        action(tmp_path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------- the command


def test_cli_diagnoses_a_foreign_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autotune.cli.app import main

    rows, _ = flat_after_warmup()
    log = write_csv(tmp_path / "their_trainer_log.csv", rows)
    flags = ["--lr", "1e-3", "--warmup-epochs", "2", "--schedule", "cosine", "--epochs", "100"]
    assert main(["diagnose", str(log), "--json", *flags]) == 0
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert findings[0]["code"] == "lr_schedule_mismatch"
    assert set(findings[0]) == {"code", "severity", "message", "evidence", "fix"}
    assert main(["diagnose", str(log), *flags]) == 0
    text = capsys.readouterr().out
    assert "lr_schedule_mismatch" in text and "Fix:" in text
    assert main(["diagnose", str(tmp_path / "missing.csv")]) == 2


