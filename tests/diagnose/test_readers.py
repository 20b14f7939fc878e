"""The log readers: every format read as its framework wrote it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autotune.diagnose import (
    read_log,
)
from tests.diagnose.scenarios import (
    write_jsonl,
)

# ------------------------------------------------------------------------ read_log


def test_read_log_renames_loss_and_reads_nan_and_inf(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("epoch, loss, lr, val_loss\n0,2.5,1e-4,\n1,nan,2e-4,inf\n2,inf,3e-4,1.0\n")
    records = read_log(path).records
    assert records[0] == {"epoch": 0.0, "train_loss": 2.5, "lr": 1e-4}
    assert math.isnan(records[1]["train_loss"]) and records[1]["val_loss"] == math.inf
    assert records[2]["train_loss"] == math.inf


def test_read_log_merges_train_and_val_rows_of_one_epoch(tmp_path: Path) -> None:
    rows = [{"epoch": 0, "step": 49, "train_loss": 1.2, "lr": 1e-3},
            {"epoch": 0, "step": 49, "val_loss": 1.1},
            {"epoch": 1, "step": 99, "train_loss": 1.0, "lr": 1e-3},
            {"epoch": 1, "step": 99, "val_loss": 0.9}]
    records = read_log(write_jsonl(tmp_path / "lightning.log", rows)).records  # sniffed
    assert records == [{"epoch": 0.0, "step": 49.0, "train_loss": 1.2, "lr": 1e-3,
                        "val_loss": 1.1},
                       {"epoch": 1.0, "step": 99.0, "train_loss": 1.0, "lr": 1e-3,
                        "val_loss": 0.9}]


def test_read_log_accepts_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"epoch": 1, "loss": 1.0, "lr": 1e-3}]))
    assert read_log(path).records == [{"epoch": 1.0, "train_loss": 1.0, "lr": 1e-3}]




def test_text_two_word_names_tell_training_from_validation(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("INFO:root:Epoch [1] Training Loss: 0.50\n"
                   "INFO:root:Epoch [1] Validation Loss: 0.60\n"
                   "INFO:root:Epoch [2] Training Loss: 0.40\n"
                   "INFO:root:Epoch [2] Validation Loss: 0.55\n")
    records = read_log(log).records
    assert records == [{"epoch": 1.0, "train_loss": 0.5, "val_loss": 0.6},
                       {"epoch": 2.0, "train_loss": 0.4, "val_loss": 0.55}]


# ------------------------------------------------------------ names as people write them


@pytest.mark.parametrize(("header", "expected"), [
    ("Step,Loss/Train_Epoch,Loss/Val_Epoch", {"train_loss": "Loss/Train_Epoch",
                                              "val_loss": "Loss/Val_Epoch"}),
    ("step,train/loss,eval/loss,train/learning_rate",
     {"train_loss": "train/loss", "val_loss": "eval/loss", "lr": "train/learning_rate"}),
    ("Epoch,Train Loss,Val Loss,Val Acc", {"train_loss": "Train Loss", "val_loss": "Val Loss",
                                           "val_acc": "Val Acc"}),
    ("epoch,TrainLoss,ValidLoss,val_acc,Grad Norm",
     {"train_loss": "TrainLoss", "val_loss": "ValidLoss", "val_acc": "val_acc",
      "grad_norm": "Grad Norm"}),
])
def test_metric_names_are_recognised_by_their_words(tmp_path: Path, header: str,
                                                    expected: dict[str, str]) -> None:
    path = tmp_path / "log.csv"
    n = len(header.split(","))
    path.write_text(header + "\n" + "\n".join(",".join([str(i)] + ["0.5"] * (n - 1))
                                              for i in range(3)) + "\n")
    log = read_log(path)
    assert {k: v for k, v in log.columns.items() if k in expected} == expected
    assert "val_acc" not in log.records[0]  # shown, not judged


def test_python_logging_lines_with_several_metrics(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("2024-01-01 12:00:00,123 INFO starting run\n"
                   "2024-01-01 12:00:00,123 INFO epoch 3 step 1200 loss=0.53 lr=1e-4 "
                   "grad_norm=2.1\n"
                   "2024-01-01 12:00:05,456 WARNING epoch 3 step 1300 loss=nan lr=1e-4 "
                   "grad_norm=inf\n")
    read = read_log(log)
    assert read.columns == {"epoch": "epoch", "step": "step", "train_loss": "loss",
                            "lr": "lr", "grad_norm": "grad_norm"}
    assert read.records[0] == {"epoch": 3.0, "step": 1200.0, "train_loss": 0.53, "lr": 1e-4,
                               "grad_norm": 2.1}
    assert math.isnan(read.records[1]["train_loss"])
    assert read.records[1]["grad_norm"] == math.inf


def test_a_column_first_seen_after_the_first_block_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autotune.diagnose.readers import tabular

    rows = [{"step": s, "loss": 1.0} for s in range(2000)] + [{"step": 2000, "loss": 0.9,
                                                                "eval_loss": 1.2}]
    path = write_jsonl(tmp_path / "late.jsonl", rows)
    monkeypatch.setattr(tabular, "BLOCK_BYTES", 1024)  # eval_loss first seen in a late block
    log = read_log(path)
    assert log.columns["val_loss"] == "eval_loss"
    assert log.records[-1]["val_loss"] == 1.2


# ------------------------------------------------------------------- long logs, pooled


def test_a_long_log_is_pooled_and_keeps_the_first_nan_at_its_step(tmp_path: Path) -> None:
    from autotune.diagnose.readers.pool import MAX_RECORDS

    n = 5 * MAX_RECORDS
    path = tmp_path / "long.csv"
    lines = ["epoch,step,loss,val_loss"]
    for s in range(n):
        loss = "nan" if s >= n - 7 else f"{1.0 + (s % 3) * 0.1:.2f}"
        val = "" if s % 1000 != 999 else "1.5"
        lines.append(f"{s // 1000},{s},{loss},{val}")
    path.write_text("\n".join(lines) + "\n")
    log = read_log(path)
    assert log.pooled and log.rows == n
    assert MAX_RECORDS <= len(log.records) <= 2 * MAX_RECORDS
    bad = [r for r in log.records if math.isnan(r.get("train_loss", 0.0))]
    assert bad[0]["step"] == n - 7
    assert all("val_loss" not in r or r["val_loss"] == 1.5 for r in log.records)
    finite = [r["train_loss"] for r in log.records[:-5] if "train_loss" in r]
    assert sum(finite) / len(finite) == pytest.approx(1.1, abs=0.01)


def test_pooling_never_joins_two_lines_of_training(tmp_path: Path) -> None:
    import numpy as np

    from autotune.diagnose.readers.pool import Pool

    pool = Pool(limit=10)
    steps = np.r_[np.arange(100), np.arange(50)]  # a restart: the steps go back
    pool.add({"step": steps.astype(float), "train_loss": np.ones(150)}, 150)
    records = pool.records()
    assert len(records) <= 20
    back = [i for i in range(1, len(records)) if records[i]["step"] < records[i - 1]["step"]]
    assert len(back) == 1
    assert sum(r["rows"] for r in records) == 150
