"""The divergence suite: configurations of the real trainer that truly diverge, recovered.

For each case (tiny profile, real ARC-AGI-1 data, the `autotune train` command):
  1. with `--recovery off` it must exit 3 (verified, not assumed);
  2. with recovery on: does it end stable, its final validation loss against the clean
     reference's, and its compute (epochs of compute) against the clean run's;
  3. the manual fix users do today: restart from scratch with the learning rate / 3
     (faults injected at a step recur, as a bad batch would).
The clean reference of a case is the default configuration on the same data, no fault.
Targets: >= 90% of cases end stable; final validation loss within 10% of the clean
reference; compute at most 1.5x a clean run.

    python benchmarks/divergence_suite.py                 # all cases, ~10-15 min on 2 cores
    python benchmarks/divergence_suite.py --cases nan lr_far_too_high --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    fault: dict[str, Any]                                  # the settings that make it diverge
    data: dict[str, Any] = field(default_factory=dict)     # shared with its clean reference
    inject: str = ""


CASES = (
    Case("lr_far_too_high", "learning rate 1.0, no warmup",
         {"learning_rate": 1.0, "warmup_epochs": 0}),
    Case("lr_high_smoothing", "learning rate 0.3 with label smoothing 0.2, no warmup",
         {"learning_rate": 0.3, "label_smoothing": 0.2, "warmup_epochs": 0}),
    Case("lr_high_after_warmup", "learning rate 1.0 reached after 2 warmup epochs",
         {"learning_rate": 1.0, "warmup_epochs": 2}),
    Case("lr_high_constant", "learning rate 0.3, constant schedule, no warmup",
         {"learning_rate": 0.3, "schedule": "constant", "warmup_epochs": 0}),
    Case("lr_collapse", "learning rate 0.05, no warmup: stuck at the colour frequencies",
         {"learning_rate": 0.05, "warmup_epochs": 0}),
    Case("spikes_no_clip", "no clipping, loss x100 at steps 30, 60, 90",
         {"grad_clip": 0.0, "learning_rate": 3e-3}, inject="spike@30,spike@60,spike@90"),
    Case("nan", "a NaN loss at step 40", {}, inject="nan_loss@40"),
    Case("inf_grad", "an infinite gradient at step 25", {}, inject="inf_grad@25"),
    Case("nan_and_spike", "a spike at step 20 and a NaN at step 70",
         {"grad_clip": 0.0}, inject="spike@20,nan_loss@70"),
    Case("overfitting", "15 tasks, no augmentation, 30 epochs",
         {"use_augmentation": False, "learning_rate": 3e-3},
         data={"max_tasks": 15, "epochs": 30}),
)


def _train(run_dir: Path, settings: dict[str, Any], recovery: bool, inject: str,
           threads: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "autotune", "train", "--device", "cpu", "--run-dir",
            str(run_dir), "--recovery", "on" if recovery else "off"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    env = {**os.environ, "AUTOTUNE_INJECT": inject, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    code = subprocess.run(args, env=env, capture_output=True, text=True).returncode
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"exit": code, "status": summary["status"], "wall_s": wall,
            "final_val": float(summary["final"].get("val_loss", "nan")),
            "best_val": float(summary["best_val_loss"]),
            "compute": int(summary["global_epochs"]), "recoveries": summary["recoveries"],
            "changes": _changes(run_dir)}


def _changes(run_dir: Path) -> dict[str, list[Any]]:
    changed: dict[str, list[Any]] = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("kind") == "recovered":
            for key, (old, new) in event["changes"].items():
                changed[key] = [changed.get(key, [old])[0], new]
    return changed


def run_case(case: Case, root: Path, clean: dict[str, Any], threads: int) -> dict[str, Any]:
    settings = {**case.data, **case.fault}
    off = _train(root / f"{case.name}-off", settings, False, case.inject, threads)
    on = _train(root / f"{case.name}-on", settings, True, case.inject, threads)
    lr = settings.get("learning_rate", 2e-3)
    manual = _train(root / f"{case.name}-manual", {**settings, "learning_rate": lr / 3}, False,
                    case.inject, threads)
    return {
        "case": case.name, "what": case.what, "verified_exit_3": off["exit"] == 3,
        "stable": on["status"] == "completed", "final_val": on["final_val"],
        "clean_val": clean["final_val"], "val_ratio": on["final_val"] / clean["final_val"],
        "compute": on["compute"], "clean_compute": clean["compute"],
        "compute_ratio": on["compute"] / clean["compute"], "recoveries": on["recoveries"],
        "changes": on["changes"],
        "manual_stable": manual["status"] == "completed", "manual_final_val": manual["final_val"],
        "manual_compute": off["compute"] + manual["compute"],
    }


def _fmt_changes(changes: dict[str, list[Any]]) -> str:
    def short(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, list):
            return f"{len(v)} steps"
        return str(v)
    return "; ".join(f"{k} {short(a)}→{short(b)}" for k, (a, b) in changes.items()) or "-"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| case | exit 3 off | stable | final val (clean) | val ratio | compute (clean) "
            "| recoveries: changes | manual /3: stable, val, compute |\n"
            "|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['case']} | {'yes' if r['verified_exit_3'] else 'NO'} | "
        f"{'yes' if r['stable'] else 'no'} | {r['final_val']:.3f} ({r['clean_val']:.3f}) | "
        f"{r['val_ratio']:.2f} | {r['compute']} ({r['clean_compute']}) | "
        f"{r['recoveries']}: {_fmt_changes(r['changes'])} | "
        f"{'yes' if r['manual_stable'] else 'no'}, {r['manual_final_val']:.3f}, "
        f"{r['manual_compute']} |\n" for r in rows)
    stable = [r for r in rows if r["stable"]]
    n = len(rows)
    foot = (f"\nverified diverging: {sum(r['verified_exit_3'] for r in rows)}/{n}; "
            f"stable with recovery: {len(stable)}/{n}; "
            f"final val within 10% of clean: {sum(r['val_ratio'] <= 1.1 for r in stable)}/{n}; "
            f"compute <= 1.5x clean: {sum(r['compute_ratio'] <= 1.5 for r in stable)}/{n}; "
            f"manual restart stable: {sum(r['manual_stable'] for r in rows)}/{n}\n")
    return head + body + foot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=[c.name for c in CASES])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cases = [c for c in CASES if c.name in args.cases]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cleans: dict[str, dict[str, Any]] = {}
        for case in cases:
            key = json.dumps(case.data, sort_keys=True)
            if key not in cleans:
                cleans[key] = _train(root / f"clean-{len(cleans)}", case.data, True, "",
                                     args.threads)
            rows.append(run_case(case, root, cleans[key], args.threads))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
