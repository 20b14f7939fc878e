"""How `autotune diagnose` scales: time and peak memory on per-step logs of N rows.

    python benchmarks/diagnose_scale.py --rows 10000 100000 1000000 --formats csv jsonl
    python benchmarks/diagnose_scale.py --rows 10000000 --formats csv --dir /tmp/logs

Each log is one run logged every step: `epoch`, `step`, `train_loss` (an exponential fall
with noise), `lr` (cosine), `grad_norm`, `val_loss` every 1,000 steps, one bad batch (the
loss x 50) at 40% of the run and NaN losses from 95% on. The logs are written once under
`--dir` and reused. Each `autotune diagnose LOG --json` runs in its own process; the time
is its wall time (and its CPU time, user + system: steadier on a shared machine) and the
memory its peak resident set (`ru_maxrss`, read in a process whose one child it was), all
for the whole process, Python and imports included. A 10-row log gives the fixed cost of
starting the command (the imports), beside the others. It checks the first finding too:
the NaN (`nonfinite_loss`) at the right step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 1_000_000


def columns(start: int, stop: int, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows start..stop-1 of a run of `rows` steps (deterministic per chunk)."""
    rng = np.random.default_rng([seed, start])
    step = np.arange(start, stop)
    position = step / rows
    loss = 0.3 + 2.0 * np.exp(-6.0 * position) + 0.05 * rng.standard_normal(len(step))
    loss[step == int(0.4 * rows)] *= 50.0
    loss[step >= int(0.95 * rows)] = np.nan
    lr = 1e-3 * 0.5 * (1.0 + np.cos(np.pi * position))
    grad = 1.0 + 0.1 * rng.standard_normal(len(step))
    val = np.where(step % 1000 == 999, loss + 0.1, np.nan)
    return {"epoch": step // 1000, "step": step, "train_loss": loss, "lr": lr,
            "grad_norm": grad, "val_loss": val}


def write_log(path: Path, rows: int, fmt: str) -> Path:
    if path.exists():
        return path
    tmp = path.with_suffix(path.suffix + ".part")
    with tmp.open("w") as f:
        if fmt == "csv":
            f.write("epoch,step,train_loss,lr,grad_norm,val_loss\n")
        for start in range(0, rows, CHUNK):
            c = columns(start, min(start + CHUNK, rows), rows)
            f.write("".join(_lines(c, fmt)))
    tmp.rename(path)
    return path


def _lines(c: dict[str, np.ndarray], fmt: str) -> list[str]:
    out = []
    for e, s, loss, lr, g, v in zip(c["epoch"].tolist(), c["step"].tolist(),
                                    c["train_loss"].tolist(), c["lr"].tolist(),
                                    c["grad_norm"].tolist(), c["val_loss"].tolist()):
        val = "" if v != v else f"{v:.6g}"
        if fmt == "csv":
            out.append(f"{e},{s},{loss:.6g},{lr:.6g},{g:.6g},{val}\n")
        else:
            extra = f', "val_loss": {val}' if val else ""
            out.append(f'{{"epoch": {e}, "step": {s}, "train_loss": {loss:.6g}, '
                       f'"lr": {lr:.6g}, "grad_norm": {g:.6g}{extra}}}\n'
                       .replace(": nan", ": NaN"))
    return out


def measure(path: Path) -> dict[str, object]:
    """Wall time, peak memory and the first finding of one `autotune diagnose` process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "autotune", "diagnose", str(path),
                                "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=env)
    out, err = process.communicate()
    wall = time.perf_counter() - started
    # This runs in a process of its own (`run_one`) whose one child was that command.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    first = json.loads(out)["findings"][0] if process.returncode == 0 else {
        "code": f"exit {process.returncode}: {err.decode()[-200:]}"}
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_mb": round(usage.ru_maxrss / 1024, 1),
            "first": first.get("code"), "step": (first.get("evidence") or {}).get("step")}


def in_process(path: Path) -> dict[str, object]:
    """CPU seconds of reading and of judging, in this process (no start-up, no imports)."""
    from autotune.diagnose import read_log
    from autotune.diagnose.target import judge_log

    started = time.process_time()
    log = read_log(path)
    read = time.process_time()
    found = judge_log(log, {"learning_rate": None, "warmup_epochs": None, "schedule": None,
                            "epochs": None}, None)
    judged = time.process_time()
    return {"read_cpu_s": round(read - started, 2), "judge_cpu_s": round(judged - read, 2),
            "records": len(log.records), "first": found[0].code.value}


def run_one(path: Path) -> dict[str, object]:
    """`measure` in a fresh child process, so that ru_maxrss is this run's alone."""
    code = ("import json, sys; sys.path.insert(0, %r); from benchmarks.diagnose_scale "
            "import measure; from pathlib import Path; print(json.dumps(measure(Path(%r))))"
            % (str(Path(__file__).resolve().parent.parent), str(path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=["csv", "jsonl"],
                        choices=["csv", "jsonl"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/autotune_scale_logs"))
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--in-process", action="store_true",
                        help="time reading and judging in this process instead")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    results = []
    for fmt in args.formats:
        for rows in [10, *args.rows]:
            path = write_log(args.dir / f"log_{rows}.{fmt}", rows, fmt)
            row = {"format": fmt, "rows": rows, "mb": round(path.stat().st_size / 2**20, 1),
                   **(in_process(path) if args.in_process else run_one(path))}
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
