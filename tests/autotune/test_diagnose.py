"""Root-cause findings: synthetic but realistic logs of the failures engineers meet."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from autotune.diagnose.core import (
    Finding,
    Intended,
    diagnose,
    diagnose_target,
    read_log,
    read_run,
    render_text,
    smoothing_floor,
)
from trainer.config import TrainConfig
from trainer.errors import ConfigError
from trainer.schedule import lr_at_epoch

Rows = list[dict[str, Any]]
Flags = dict[str, Any]


def planned(position: float, lr: float = 1e-3, warmup: float = 2.0, epochs: int = 30,
            schedule: str = "cosine") -> float:
    config = TrainConfig().replace(learning_rate=lr, warmup_epochs=warmup, epochs=epochs,
                                   schedule=schedule)
    return lr_at_epoch(position, config)


def write_csv(path: Path, rows: Rows) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False, na_rep="nan")
    return path


def write_jsonl(path: Path, rows: Rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# ----------------------------------------------------------------------- the scenarios


def flat_after_warmup() -> tuple[Rows, Flags]:
    """(a) Warmup code sets param_group["lr"] every step: lr flat at the peak for 100 epochs."""
    rows = []
    for e in range(100):  # 0-based labels, lr at the end of the epoch
        loss = 0.3 + 2.0 * math.exp(-e / 15) + 0.01 * math.sin(e)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.05,
                     "lr": 1e-3 * min(1.0, (e + 1) / 5)})
    return rows, {"lr": 1e-3, "warmup_epochs": 5, "schedule": "cosine", "epochs": 100}


def compounded() -> tuple[Rows, Flags]:
    """(b) Manual warmup multiplied into a chainable scheduler: lr settles at 1/10."""
    rows = []
    for e in range(1, 61):  # 1-based labels, lr at the end
        intended = planned(e, warmup=3, epochs=60)
        rows.append({"epoch": e, "loss": 1.5 + math.exp(-e / 40),
                     "lr": intended * 0.1 ** min(e / 3, 1.0)})
    return rows, {"lr": 1e-3, "warmup_epochs": 3, "schedule": "cosine", "epochs": 60}


def rising_at_peak() -> tuple[Rows, Flags]:
    """(c) The loss falls, then climbs while the lr is still near its peak."""
    rows = []
    for e in range(1, 13):
        loss = 2.0 - 0.25 * (e - 1) if e <= 5 else 1.0 + 0.12 * (e - 5)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1,
                     "lr": planned(e), "grad_norm": 0.5 * 1.3 ** max(e - 5, 0)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


def overfitting() -> tuple[Rows, Flags]:
    """(d) Training loss keeps falling, validation loss rises after epoch 12."""
    rows = []
    for e in range(1, 31):
        val = 0.9 + 0.5 * math.exp(-min(e, 12) / 4) + 0.03 * max(e - 12, 0)
        rows.append({"epoch": e, "train_loss": 0.2 + 1.8 * math.exp(-e / 8), "val_loss": val,
                     "lr": planned(e)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


def nan_at_seven() -> tuple[Rows, Flags]:
    """(e) NaN from epoch 7 on (0-based labels, lr at the start of the epoch)."""
    rows = []
    for e in range(20):
        loss = 0.3 + 2.0 * math.exp(-e / 5) if e < 7 else math.nan
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1,
                     "lr": planned(e, warmup=1, epochs=20)})
    return rows, {"lr": 1e-3, "warmup_epochs": 1, "schedule": "cosine", "epochs": 20}


def one_spike() -> tuple[Rows, Flags]:
    """(f) One bad batch: the loss triples at epoch 20 and comes straight back."""
    rows = []
    for e in range(1, 41):
        loss = 0.3 + 1.7 * math.exp(-e / 10)
        rows.append({"epoch": e, "train_loss": loss * (3.0 if e == 20 else 1.0),
                     "val_loss": loss + 0.1, "lr": planned(e, epochs=40)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 40}


def healthy(position: Callable[[int], float] = float, first: int = 0
            ) -> tuple[Rows, Flags]:
    """(g) Loss and validation loss fall, lr follows the schedule."""
    rows = []
    for e in range(first, first + 50):
        loss = 0.25 + 2.0 * math.exp(-e / 12)
        rows.append({"epoch": e, "train_loss": loss, "val_loss": loss + 0.1 + 0.002 * (e % 2),
                     "lr": planned(position(e), warmup=3, epochs=50)})
    return rows, {"lr": 1e-3, "warmup_epochs": 3, "schedule": "cosine", "epochs": 50}


def smoothed() -> tuple[Rows, Flags]:
    """(h) Label smoothing 0.1 over 10 colours: the training loss flattens near 0.5."""
    rows = []
    for e in range(1, 31):
        rows.append({"epoch": e, "train_loss": 0.52 + 1.5 * math.exp(-e / 6),
                     "val_loss": 0.1 + 1.2 * math.exp(-e / 6), "lr": planned(e)})
    return rows, {"lr": 1e-3, "warmup_epochs": 2, "schedule": "cosine", "epochs": 30}


SCENARIOS: list[tuple[str, Callable[[], tuple[Rows, Flags]], str, list[str]]] = [
    ("flat_after_warmup", flat_after_warmup, "csv", ["lr_schedule_mismatch"]),
    ("compounded", compounded, "jsonl", ["lr_schedule_mismatch"]),
    ("rising_at_peak", rising_at_peak, "csv", ["lr_too_high"]),
    ("overfitting", overfitting, "jsonl", ["overfitting"]),
    ("nan_at_seven", nan_at_seven, "csv", ["nonfinite_loss"]),
    ("one_spike", one_spike, "jsonl", ["loss_spike"]),
    ("healthy", healthy, "csv", ["healthy"]),
]


@pytest.mark.parametrize(("name", "scenario", "fmt", "expected"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_log_scenarios_give_exactly_the_expected_findings(
        tmp_path: Path, name: str, scenario: Callable[[], tuple[Rows, Flags]], fmt: str,
        expected: list[str]) -> None:
    rows, flags = scenario()
    write = write_csv if fmt == "csv" else write_jsonl
    path = write(tmp_path / f"{name}.{fmt}", rows)
    findings = diagnose_target(path, **flags)
    assert codes(findings) == expected
    json.dumps([f.to_dict() for f in findings], allow_nan=False)


def test_flat_schedule_names_the_overwrite_bug_with_numbers(tmp_path: Path) -> None:
    rows, flags = flat_after_warmup()
    [finding] = diagnose_target(write_csv(tmp_path / "a.csv", rows), **flags)
    assert finding.severity == "error"
    assert "overwrites the scheduler" in finding.message
    assert "param_group['lr']" in finding.message
    ev = finding.evidence
    assert ev["pattern"] == "flat_after_warmup"
    assert ev["alignment"] == "epoch+1"
    last = ev["samples"][-1]
    assert last["epoch"] == 99
    assert last["applied"] == pytest.approx(1e-3)
    assert last["intended"] == pytest.approx(5e-5, rel=1e-3)  # the cosine floor
    assert ev["ratio_at_end"] == pytest.approx(20.0, rel=1e-3)
    assert "5e-5" in finding.fix


def test_compounded_scheduler_settles_at_a_tenth(tmp_path: Path) -> None:
    rows, flags = compounded()
    [finding] = diagnose_target(write_jsonl(tmp_path / "b.jsonl", rows), **flags)
    assert finding.evidence["pattern"] == "compounded"
    assert finding.evidence["median_ratio_late"] == pytest.approx(0.1, rel=1e-3)
    assert finding.evidence["alignment"] == "epoch"
    assert "chainable scheduler" in finding.message
    assert "compounds" in finding.message


def test_rising_loss_at_peak_suggests_a_third_of_the_lr(tmp_path: Path) -> None:
    rows, flags = rising_at_peak()
    [finding] = diagnose_target(write_csv(tmp_path / "c.csv", rows), **flags)
    assert finding.evidence["best_epoch"] == 5
    assert finding.evidence["start_epoch"] == 6
    assert finding.evidence["lr_fraction_of_peak"] > 0.9
    assert finding.evidence["suggested_learning_rate"] == pytest.approx(1e-3 / 3)
    assert "set learning_rate to 3.3e-4 (1/3 of 1e-3)" in finding.fix
    assert "gradient norm grew" in finding.message


def test_overfitting_is_kept_apart_from_instability(tmp_path: Path) -> None:
    rows, flags = overfitting()
    [finding] = diagnose_target(write_jsonl(tmp_path / "d.jsonl", rows), **flags)
    assert finding.evidence["best_epoch"] == 12
    assert finding.evidence["records_rising"] == 18
    assert "stop at the best epoch 12" in finding.fix
    assert "use_augmentation" in finding.fix
    # The same validation curve with a training loss that rises too is instability.
    unstable = [{**r, "train_loss": 0.6 + 0.02 * r["epoch"]} for r in rows]
    found = diagnose(unstable, Intended(1e-3, 2.0, "cosine", 30))
    assert "overfitting" not in codes(found)
    assert codes(found)[0] in ("lr_too_high", "loss_increase")


def test_nan_names_the_first_epoch_and_its_lr(tmp_path: Path) -> None:
    rows, flags = nan_at_seven()
    [finding] = diagnose_target(write_csv(tmp_path / "e.csv", rows), **flags)
    assert finding.evidence["epoch"] == 7
    assert finding.evidence["value"] == "nan"
    assert finding.evidence["lr"] == pytest.approx(planned(7, warmup=1, epochs=20))
    assert finding.evidence["last_finite_epoch"] == 6
    assert "became nan at epoch 7" in finding.message


def test_spike_reports_value_mean_and_ratio(tmp_path: Path) -> None:
    rows, flags = one_spike()
    [finding] = diagnose_target(write_jsonl(tmp_path / "f.jsonl", rows), **flags)
    ev = finding.evidence
    window = [r["train_loss"] for r in rows[14:19]]
    assert ev["epoch"] == 20
    assert ev["running_mean"] == pytest.approx(sum(window) / 5, rel=1e-5)
    assert ev["ratio"] == pytest.approx(rows[19]["train_loss"] / (sum(window) / 5), rel=1e-5)
    assert ev["count"] == 1
    assert "fell back" in finding.message


def test_smoothing_floor_for_ten_colours(tmp_path: Path) -> None:
    rows, _ = smoothed()
    history = read_log(write_csv(tmp_path / "h.csv", rows))
    intended = Intended(1e-3, 2.0, "cosine", 30, label_smoothing=0.1)
    [finding] = diagnose(history, intended)
    assert finding.code == "smoothing_floor"
    assert finding.severity == "warning"
    assert finding.evidence["floor"] == pytest.approx(0.5003, abs=1e-4)
    assert finding.evidence["num_classes"] == 10
    assert "cannot fall below 0.500" in finding.message
    assert "val_loss" in finding.fix


@pytest.mark.parametrize(("eps", "classes", "floor"), [
    (0.0, 10, 0.0),
    (0.1, 10, 0.91 * -math.log(0.91) + 9 * 0.01 * -math.log(0.01)),
    (0.1, 12, (1 - 0.1 + 0.1 / 12) * -math.log(1 - 0.1 + 0.1 / 12)
     + 11 * (0.1 / 12) * -math.log(0.1 / 12)),
    (0.99, 2, 0.505 * -math.log(0.505) + 0.495 * -math.log(0.495)),
])
def test_smoothing_floor_is_the_smoothed_target_entropy(eps: float, classes: int,
                                                        floor: float) -> None:
    assert smoothing_floor(eps, classes) == pytest.approx(floor)


@pytest.mark.parametrize(("convention", "position", "first"), [
    ("0-based, lr at start", lambda e: float(e), 0),
    ("0-based, lr at end", lambda e: float(e + 1), 0),
    ("1-based, lr at start", lambda e: float(e - 1), 1),
    ("1-based, lr at end", lambda e: float(e), 1),
])
def test_logging_conventions_are_aligned(tmp_path: Path, convention: str,
                                         position: Callable[[int], float], first: int) -> None:
    rows, flags = healthy(position, first)
    assert codes(diagnose_target(write_csv(tmp_path / "g.csv", rows), **flags)) == ["healthy"]


def test_noisy_per_step_log_is_healthy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for step in range(10, 501, 10):  # 50 steps an epoch, logged every 10 (HF style)
        epoch = round(step / 50, 2)
        loss = (0.3 + 2.0 * math.exp(-epoch / 3)) * (1 + 0.05 * rng.standard_normal())
        rows.append({"loss": loss, "learning_rate": planned(step / 50, warmup=1, epochs=10),
                     "epoch": epoch, "step": step})
    path = write_jsonl(tmp_path / "steps.jsonl", rows)
    findings = diagnose_target(path, 1e-3, 1.0, "cosine", 10)
    assert codes(findings) == ["healthy"]


def test_schedule_bug_ranks_before_the_lr_too_high_it_causes(tmp_path: Path) -> None:
    rows = []
    for e in range(1, 41):  # flat at the peak; the loss climbs once it should have decayed
        loss = 0.5 + 1.5 * math.exp(-e / 5) + 0.05 * max(e - 20, 0)
        rows.append({"epoch": e, "train_loss": loss, "lr": 1e-3 * min(1.0, e / 2)})
    findings = diagnose_target(write_csv(tmp_path / "a2.csv", rows), 1e-3, 2.0, "cosine", 40)
    assert codes(findings) == ["lr_schedule_mismatch", "lr_too_high"]
    assert "lr_schedule_mismatch finding explains" in findings[1].message
    assert findings[1].fix.startswith("fix the learning-rate schedule first")


def test_without_lr_the_schedule_checks_are_skipped(tmp_path: Path) -> None:
    rows, _ = nan_at_seven()
    findings = diagnose_target(write_csv(tmp_path / "e.csv", rows), None, None, None, None)
    assert codes(findings) == ["nonfinite_loss", "lr_check_skipped"]
    rows, _ = flat_after_warmup()
    findings = diagnose_target(write_csv(tmp_path / "a.csv", rows), None, None, None, None)
    assert codes(findings) == ["healthy", "lr_check_skipped"]
    assert findings[1].severity == "info"


@pytest.mark.parametrize(("convention", "position", "first"), [
    ("0-based, lr at start", lambda e: float(e), 0),
    ("1-based, lr at end", lambda e: float(e), 1),
])
def test_warmup_and_epochs_default_from_a_complete_log(
        tmp_path: Path, convention: str, position: Callable[[int], float], first: int) -> None:
    rows, _ = healthy(position, first)
    findings = diagnose_target(write_csv(tmp_path / "g.csv", rows), 1e-3, None, None, None)
    assert codes(findings) == ["healthy"]


def test_assumed_epochs_of_a_truncated_log_weaken_the_mismatch(tmp_path: Path) -> None:
    rows, _ = rising_at_peak()  # 12 epochs logged of 30 planned
    findings = diagnose_target(write_csv(tmp_path / "c.csv", rows), 1e-3, None, None, None)
    assert codes(findings) == ["lr_too_high", "lr_schedule_mismatch"]
    mismatch = findings[1]
    assert mismatch.severity == "warning"
    assert mismatch.evidence["assumed"] == {"epochs": 12, "schedule": "cosine",
                                            "warmup_epochs": 2.0}
    assert "assumed: epochs 12, schedule cosine, warmup_epochs 2" in mismatch.message
    assert "--epochs" in mismatch.fix
    assert "lr_schedule_mismatch" not in findings[0].message  # a weak mismatch explains nothing
    # With the planned epochs given, the schedule is fine and only the loss speaks.
    findings = diagnose_target(tmp_path / "c.csv", 1e-3, None, None, 30)
    assert codes(findings) == ["lr_too_high"]


# ------------------------------------------------------------------------ read_log


def test_read_log_renames_loss_and_reads_nan_and_inf(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("epoch, loss, lr, val_loss\n0,2.5,1e-4,\n1,nan,2e-4,inf\n2,inf,3e-4,1.0\n")
    records = read_log(path)
    assert records[0] == {"epoch": 0.0, "train_loss": 2.5, "lr": 1e-4}
    assert math.isnan(records[1]["train_loss"]) and records[1]["val_loss"] == math.inf
    assert records[2]["train_loss"] == math.inf


def test_read_log_merges_train_and_val_rows_of_one_epoch(tmp_path: Path) -> None:
    rows = [{"epoch": 0, "step": 49, "train_loss": 1.2, "lr": 1e-3},
            {"epoch": 0, "step": 49, "val_loss": 1.1},
            {"epoch": 1, "step": 99, "train_loss": 1.0, "lr": 1e-3},
            {"epoch": 1, "step": 99, "val_loss": 0.9}]
    records = read_log(write_jsonl(tmp_path / "lightning.log", rows))  # sniffed as JSON
    assert records == [{"epoch": 0.0, "step": 49.0, "train_loss": 1.2, "lr": 1e-3,
                        "val_loss": 1.1},
                       {"epoch": 1.0, "step": 99.0, "train_loss": 1.0, "lr": 1e-3,
                        "val_loss": 0.9}]


def test_read_log_accepts_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"epoch": 1, "loss": 1.0, "lr": 1e-3}]))
    assert read_log(path) == [{"epoch": 1.0, "train_loss": 1.0, "lr": 1e-3}]


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
    assert "learning_rate 1e-3 -> 3.33e-4" in recovered.message


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


# ---------------------------------------------------------------------- rendering


def test_render_text_and_json_form() -> None:
    finding = Finding("lr_too_high", "error", "Loss rose.", {"lr": 1e-3, "x": math.nan},
                      "set learning_rate to 3.3e-4 (1/3 of 1e-3)", 0.8)
    healthy_one = Finding("healthy", "info", "Nothing wrong.", {}, "", 1.0)
    assert render_text([finding, healthy_one]) == (
        "[ERROR] lr_too_high: Loss rose.\n  Fix: set learning_rate to 3.3e-4 (1/3 of 1e-3)"
        "\n\n[INFO] healthy: Nothing wrong.")
    assert finding.to_dict() == {"code": "lr_too_high", "severity": "error",
                                 "message": "Loss rose.", "evidence": {"lr": 1e-3, "x": "nan"},
                                 "fix": "set learning_rate to 3.3e-4 (1/3 of 1e-3)"}


def test_empty_history_has_no_data() -> None:
    assert codes(diagnose([], None)) == ["no_data"]


# --------------------------------------------------------------------- bad inputs


def _missing_column(tmp: Path) -> None:
    (tmp / "log.csv").write_text("epoch,loss\n0,1.0\n")
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
     r"log\.csv: missing column 'lr'; a training log needs the columns epoch, train_loss"),
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


def _collapsed_rows(levels: bool) -> Rows:
    vals = [2.01, 1.81, 1.776, 1.754, 1.764, 1.75]
    trains = [2.5, 1.87, 1.79, 1.752, 1.776, 1.76]
    rows = [{"epoch": e, "train_loss": t, "val_loss": v,
             "lr": lr_at_epoch(e, TrainConfig(learning_rate=0.04, warmup_epochs=0, epochs=6))}
            for e, (t, v) in enumerate(zip(trains, vals), start=1)]
    if levels:
        rows = [{**r, "marginal_loss": 1.747, "train_marginal_loss": 1.759} for r in rows]
    return rows


def test_a_loss_stuck_at_the_colour_frequencies_is_a_collapse() -> None:
    intended = Intended(0.04, 0.0, "cosine", 6, num_classes=12)
    found = diagnose(_collapsed_rows(levels=True), intended)
    assert codes(found)[0] == "collapsed"
    finding = found[0]
    assert finding.severity == "error"
    assert finding.evidence["marginal_loss"] == 1.747
    assert finding.evidence["since_epoch"] == 4
    assert finding.evidence["suggested_learning_rate"] == pytest.approx(0.04 / 3, rel=1e-4)
    assert "learning_rate 1.3e-2 (1/3 of 4e-2) and gradient clipping on" in finding.fix
    assert "from the start" in finding.fix
    # A log that does not tell the level cannot be judged for it.
    assert "collapsed" not in codes(diagnose(_collapsed_rows(levels=False), intended))
