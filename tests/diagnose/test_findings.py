"""Findings of the loss and schedule checks on synthetic logs of the failures engineers meet."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from autotune.diagnose import (
    Finding,
    Intended,
    diagnose,
    diagnose_target,
    read_log,
    render_text,
    smoothing_floor,
)
from tests.diagnose.scenarios import (
    SCENARIOS,
    Flags,
    Rows,
    codes,
    compounded,
    flat_after_warmup,
    healthy,
    nan_at_seven,
    one_spike,
    overfitting,
    planned,
    rising_at_peak,
    smoothed,
    write_csv,
    write_jsonl,
)
from trainer.config import TrainConfig
from trainer.schedule import lr_at_epoch


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
    # A foreign log gets advice any trainer can follow; use_augmentation is our ARC key.
    assert "data augmentation" in finding.fix
    assert "use_augmentation" not in finding.fix
    # The same validation curve with a training loss that rises too is instability.
    unstable = [{**r, "train_loss": 0.6 + 0.02 * r["epoch"]} for r in rows]
    found = diagnose(unstable, Intended(1e-3, 2.0, "cosine", 30))
    assert "overfitting" not in codes(found)
    assert codes(found)[0] == "lr_too_high"


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
    history = read_log(write_csv(tmp_path / "h.csv", rows)).records
    intended = Intended(1e-3, 2.0, "cosine", 30, label_smoothing=0.1, num_classes=10)
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


# ------------------------------------------------- noise, transients and mild overfitting


def test_noise_is_measured_from_the_curve() -> None:
    from autotune.diagnose.thresholds import noise

    assert noise([1.0, 2.0, 3.0, 4.0, 5.0]) == 0.0  # a pure trend has no noise
    wiggle = [1.0 + 0.1 * (-1) ** i for i in range(20)]
    assert noise(wiggle) > 0.05
    assert noise([1.0, 2.0]) == 0.0


def test_a_val_jump_that_recovers_is_instability_not_overfitting() -> None:
    from autotune.diagnose import diagnose

    vals = [1.0, 4.0, 0.9, 0.85, 0.8, 0.78]
    rows = [{"epoch": e, "train_loss": 1.5 - 0.1 * e, "val_loss": v, "lr": 0.1}
            for e, v in enumerate(vals)]
    found = diagnose(rows, None)
    assert found[0].code == "lr_too_high"
    assert found[0].evidence["recovered_epoch"] == 2
    no_lr = diagnose([{k: v for k, v in r.items() if k != "lr"} for r in rows], None)
    assert no_lr[0].code == "loss_increase"
    assert "overfitting" not in [f.code for f in no_lr]


def test_a_val_rise_within_its_noise_is_not_overfitting() -> None:
    from autotune.diagnose import diagnose

    # val swings by +-0.05 around 0.5 at every epoch; the last three rise by 0.02 in all
    vals = [0.8, 0.6, 0.55, 0.5, 0.56, 0.49, 0.55, 0.5, 0.56, 0.49, 0.5, 0.505, 0.51]
    rows = [{"epoch": e, "train_loss": 0.9 - 0.05 * e, "val_loss": v}
            for e, v in enumerate(vals)]
    assert diagnose(rows, None)[0].code == "healthy"


def test_a_per_step_rise_within_batch_noise_is_not_a_rise() -> None:
    from autotune.diagnose import diagnose

    noise = [0.0, 0.08, -0.05, 0.1, -0.07, 0.04, -0.02, 0.09, -0.06, 0.03]
    rows = [{"epoch": s // 50, "step": s, "train_loss": 0.3 + noise[s % 10] + 0.04 * (s % 37 == 0)}
            for s in range(300)]
    assert diagnose(rows, None, per_step=True)[0].code == "healthy"
