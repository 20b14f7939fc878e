"""Run `autotune diagnose` over a folder of training logs and score the first findings.

    python benchmarks/diagnose_logs.py tests/diagnose/logs --expected EXPECTED.csv
    python benchmarks/diagnose_logs.py /tmp/public_logs --expected /tmp/public_logs/expected.csv
    python benchmarks/diagnose_logs.py tests/diagnose/logs/real \
        --expected tests/diagnose/logs/real/MANIFEST.csv   # issue 22's real set

EXPECTED is a CSV (or a YAML mapping of file -> code) with columns `file`, `expected` and
optionally `flags` (extra keyword arguments for `diagnose_target`, as `key=value` separated
by spaces, e.g. `lr=1e-3 warmup_epochs=2`) and `why`. Without --expected, the table of the
committed set (`COMMITTED` below) is used for tests/diagnose/logs. It prints one line per
log (read or not, the format, the first finding, right or wrong) and the totals.

The public set measured for issue 12 is not committed (files from public repositories are
not committed here); what was measured, from which repository, path and commit, with the
expected first finding written down before diagnose was run on it:

(file: repository@commit:path -> expected first finding)

    hf_finnews_trainer_state.json: arshiv-web/Financial-News-Sentiment-Analysis
        @aa64159fb782:results/checkpoint-10350/trainer_state.json -> overfitting
    hf_lora_imdb_trainer_state.json: Tashu014/lora-imdb-distilbert
        @b43db57b9033:trainer_state.json -> healthy
    hf_sentiment_feedback_trainer_state.json: Jaypee34/Sentiment-Analysis-for-Customer-Feedback
        @1e3f1967791a:trainer_state.json -> healthy
    hf_t5_summarization_trainer_state.json: 10844110/t5-summarization-demo
        @bf0ebb2464f6:trainer_state.json -> healthy
    lightning_cv_v0_metrics.csv: HCDescamps/cv-image-classification
        @ef1c18a39de7:lightning_logs/version_0/metrics.csv -> healthy
    lightning_lstm_v11_metrics.csv: DiogoFerreira7/LSTM-Implementation
        @07f78841177a:lightning_logs/version_11/metrics.csv -> healthy
    lightning_mnist_v17_metrics.csv: Awritrojit/AIOPS_learning_mnist
        @685827729400:lightning_logs/version_17/metrics.csv -> healthy
    cifar10_training.log: 5697526/CIFAR-10-Network@02e9745c4d20:training.log -> healthy
    keras_resnet50_emotion_training.log: Aditya24jar/Emotion-Detection-Resnet50
        @21caba3f7fff:training.log -> loss_increase (val 1.44 -> 7.42 -> 1.29, no lr)
    driver_distraction_training.log: AllenSaldanha/DriverDistractionRecognition
        @b8f91d81b7a6:training.log -> healthy
    face_emotion_training.log: AdityaJ87/Face_Emotion_Detection
        @c6b45c0cc252:training.log -> healthy

Measured (issue 12): all 11 read as written; 8 of 11 right before the rule changes of
that pass (misses: the two per-step logs called loss_increase on batch noise, the ResNet50
log called overfitting), 11 of 11 after.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from autotune.diagnose import diagnose_target, read_log
from autotune.errors import ConfigError

# The committed set (tests/diagnose/logs, see SOURCES.md): the first finding each was made
# to show, and the flags it is diagnosed with.
COMMITTED: dict[str, tuple[str, dict[str, Any]]] = {
    "lightning_healthy": ("healthy", {}),
    "lightning_overfit_metrics.csv": ("overfitting", {}),
    "lightning_nan_metrics.csv": ("nonfinite_loss", {}),
    "keras_appended_training.log": ("healthy", {}),
    "keras_overfit.tsv": ("overfitting", {}),
    "keras_lr_too_high.csv": ("lr_too_high", {}),
    "hf_two_evals_trainer_state.json": ("healthy", {}),
    "hf_overfit_trainer_state.json": ("overfitting", {}),
    "tb_spike": ("loss_spike", {}),
    "tb_healthy": ("healthy", {}),
    "text_bracket_overfit_train.log": ("overfitting", {}),
    "text_nan_output.txt": ("nonfinite_loss", {}),
    "text_lr_too_high.log": ("lr_too_high", {}),
    "text_warmup_overwrites_schedule.log": (
        "lr_schedule_mismatch",
        {"lr": 1e-3, "warmup_epochs": 2.0, "schedule": "cosine", "epochs": 20}),
}


def _flags(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in text.split():
        key, _, value = pair.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def load_expected(path: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """file -> (expected first finding, flags) from a CSV or a YAML mapping."""
    if path.suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(path.read_text()) or {}
        return {str(k): (str(v), {}) if not isinstance(v, dict)
                else (str(v["expected"]), dict(v.get("flags") or {}))
                for k, v in loaded.items()}
    with path.open(newline="") as handle:
        return {row["file"]: (row["expected"].strip(), _flags(row.get("flags") or ""))
                for row in csv.DictReader(handle)}


def measure(folder: Path, expected: dict[str, tuple[str, dict[str, Any]]]
            ) -> list[dict[str, Any]]:
    """One row per expected log: read, format, first finding, right."""
    rows = []
    for name, (want, flags) in expected.items():
        row: dict[str, Any] = {"file": name, "expected": want, "read": False,
                               "format": "", "first": "", "right": False, "error": ""}
        try:
            row["format"] = read_log(folder / name).format
            row["read"] = True
            findings = diagnose_target(folder / name, **flags)
            row["first"] = findings[0].code.value
            row["right"] = row["first"] == want
            row["message"] = findings[0].message
        except (ConfigError, ValueError, OSError) as exc:
            row["error"] = str(exc).splitlines()[0][:160]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--expected", type=Path, default=None)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each first finding's message")
    args = parser.parse_args(argv)
    expected = load_expected(args.expected) if args.expected else COMMITTED
    rows = measure(args.folder, expected)
    for r in rows:
        mark = "ok  " if r["right"] else "MISS"
        status = r["format"] if r["read"] else f"NOT READ: {r['error']}"
        print(f"{mark} {r['file']:<42} {status:<12} first={r['first'] or '-':<22} "
              f"expected={r['expected']}" + (f"  ({r['error']})" if r["read"] and r["error"]
                                              else ""))
        if args.verbose and r.get("message"):
            print(f"     {r['message'][:300]}")
    read = sum(r["read"] for r in rows)
    right = sum(r["right"] for r in rows)
    n = len(rows)
    print(f"read as written: {read}/{n}; right first finding: {right}/{n} "
          f"({100 * right / n:.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
