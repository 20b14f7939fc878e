"""The log readers: every format read as its framework wrote it."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
