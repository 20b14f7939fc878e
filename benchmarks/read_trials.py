"""Read the trials of a `search_vs_optuna.py --keep DIR` run: which trials won, which
diverged, what recovery and triage did with them, and what they cost.

    python benchmarks/read_trials.py DIR [--at 16] [--seeds 12 13] [--summary]

Per arm and seed, one line a trial: its searched parameters, how it ended (COMPLETE, PRUNED,
FAIL), its value (the best stable validation loss for a complete stable trial), the epochs
of compute it trained (replays included; for plain, the epochs it reported), its
divergences and recoveries (`on`), its triage choices, and its validation loss at epoch
`--at` (on its surviving timeline): a trial whose rank at that epoch differs from its rank
at the end is one that triage, reading ranks at the rollback epoch, misjudges. The winner
(the best stable trial) is marked `*`. `--summary` prints, per arm, the winners' and the
diverged trials' parameters side by side, and the epochs spent on diverged trials;
`--salvaged` each trial `on` salvaged beside plain's run of the same configuration.

plain's trials come from `plain-SEED/trials.json` (written by `search_vs_optuna.py`), the
autotune arms' from their SQLite studies.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class TrialRow:
    """One trial of one arm's search, as read back."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    stable: bool
    epochs: int
    diverged: bool
    recoveries: int = 0
    triage: list[str] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)
    """Validation loss by epoch (the surviving timeline)."""


def plain_rows(path: Path) -> list[TrialRow]:
    rows = []
    for t in json.loads(path.read_text()):
        values = {int(k): float(v) for k, v in t["intermediate_values"].items()}
        attrs = t["user_attrs"]
        rows.append(TrialRow(t["number"], t["state"], t["params"], t["value"],
                             t["state"] == "COMPLETE" and bool(attrs.get("stable")),
                             len(values), bool(attrs.get("diverged")), values=values))
    return rows


def study_rows(db: Path, name: str) -> list[TrialRow]:
    from autotune.search.timeline import timeline_values

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        rows.append(TrialRow(
            t.number, t.state.name, dict(t.params), t.value,
            t.state.name == "COMPLETE" and bool(a.get("stable")),
            int(a.get("global_epochs") or 0), int(a.get("divergences") or 0) > 0,
            int(a.get("recoveries") or 0), [str(d.get("choice")) for d in a.get("triage", [])],
            {int(k): float(v) for k, v in timeline_values(t).items()}))
    return rows


def read(folder: Path) -> dict[tuple[str, int], list[TrialRow]]:
    """Every arm-seed folder under a --keep DIR: (arm, seed) -> its trials."""
    out = {}
    for sub in sorted(folder.iterdir()):
        if not sub.is_dir() or "-" not in sub.name:
            continue
        arm, _, seed = sub.name.partition("-")
        if arm == "plain" and (sub / "trials.json").exists():
            out[(arm, int(seed))] = plain_rows(sub / "trials.json")
        elif (sub / f"bench-{arm}-{seed}.db").exists():
            out[(arm, int(seed))] = study_rows(sub / f"bench-{arm}-{seed}.db",
                                               f"bench-{arm}-{seed}")
    return out


def winner(rows: list[TrialRow]) -> TrialRow | None:
    stable = [r for r in rows if r.stable and r.value is not None and math.isfinite(r.value)]
    return min(stable, key=lambda r: r.value or math.inf, default=None)


def _param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_line(row: TrialRow, best: TrialRow | None, at: int) -> str:
    params = " ".join(f"{k}={_param(v)}" for k, v in sorted(row.params.items()))
    value = f"{row.value:.4f}" if row.value is not None else "-"
    then = row.values.get(at)
    mark = "*" if best is not None and row.number == best.number else " "
    return (f"{mark}#{row.number:<3d} {params}  {row.state:8s} {value:>7s}"
            f"{'' if row.stable or row.state != 'COMPLETE' else ' (unstable)'}  "
            f"epochs {row.epochs:3d}  {'diverged' if row.diverged else '        '}"
            f"{f'  recoveries {row.recoveries}' if row.recoveries else ''}"
            f"{'  triage ' + ','.join(row.triage) if row.triage else ''}"
            f"  @{at} {'-' if then is None else f'{then:.4f}'}")


def _median(xs: list[Any]) -> str:
    return f"{statistics.median(xs):.4g}" if xs else "-"


def summary(runs: dict[tuple[str, int], list[TrialRow]], key: str) -> list[str]:
    lines = []
    for arm in ("plain", "off", "on"):
        seeds = sorted(s for a, s in runs if a == arm)
        if not seeds:
            continue
        winners = [w for s in seeds if (w := winner(runs[(arm, s)])) is not None]
        diverged = [r for s in seeds for r in runs[(arm, s)] if r.diverged]
        spent = [sum(r.epochs for r in runs[(arm, s)] if r.diverged) for s in seeds]
        total = [sum(r.epochs for r in runs[(arm, s)]) for s in seeds]
        lines.append(
            f"{arm:5s} {len(seeds)} seeds: winners' {key} median "
            f"{_median([w.params[key] for w in winners if key in w.params])}; "
            f"{len(diverged)} diverged trials, {key} median "
            f"{_median([r.params[key] for r in diverged if key in r.params])}, "
            f"{sum(r.stable for r in diverged)} of them ended stable, the best of those "
            f"{min((r.value for r in diverged if r.stable and r.value), default=math.nan):.4f}"
            f"; epochs on diverged trials {sum(spent)} of {sum(total)}")
    return lines


def salvaged_pairs(runs: dict[tuple[str, int], list[TrialRow]]
                   ) -> list[tuple[int, TrialRow, TrialRow]]:
    """Each trial `on` salvaged (diverged, ended stable) beside plain's run of the same
    sampled configuration in the same seed, where plain ran it to the end: (seed, on's
    trial, plain's trial). Both searches draw the same first configurations, so this is
    what recovery did to one trial, at the epochs each took."""
    out = []
    for (arm, seed), rows in sorted(runs.items(), key=lambda kv: kv[0][1]):
        if arm != "on" or ("plain", seed) not in runs:
            continue
        for row in rows:
            if not (row.diverged and row.stable and row.value is not None):
                continue
            same = [p for p in runs[("plain", seed)]
                    if p.params == row.params and p.state == "COMPLETE" and p.value is not None]
            if same:
                out.append((seed, row, same[0]))
    return out


def pairs_lines(pairs: list[tuple[int, TrialRow, TrialRow]]) -> list[str]:
    lines = [f"seed {seed} trial {on.number} (plain's {plain.number}): on {on.value:.4f} in "
             f"{on.epochs} epochs, plain {plain.value:.4f}"
             f"{'' if plain.stable else ' (unstable)'} in {plain.epochs}"
             for seed, on, plain in pairs]
    diffs = [float(on.value or 0) - float(plain.value or 0) for _, on, plain in pairs]
    if diffs:
        lines.append(f"{len(pairs)} salvaged trials plain ran to the end too: on better in "
                     f"{sum(d < 0 for d in diffs)}, worse in {sum(d > 0 for d in diffs)}, "
                     f"median difference {statistics.median(diffs):+.4f}; epochs "
                     f"{sum(on.epochs for _, on, _ in pairs)} against "
                     f"{sum(plain.epochs for _, _, plain in pairs)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a search_vs_optuna.py --keep folder")
    parser.add_argument("--at", type=int, default=16, help="show each trial's value here")
    parser.add_argument("--seeds", type=int, nargs="*", default=None)
    parser.add_argument("--summary", action="store_true", help="only the per-arm summary")
    parser.add_argument("--key", default="learning_rate", help="the parameter summarised")
    parser.add_argument("--salvaged", action="store_true",
                        help="each trial `on` salvaged beside plain's run of the same "
                             "configuration (same seed)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder (a search_vs_optuna.py --keep DIR)")
    runs = read(args.folder)
    if args.seeds is not None:
        runs = {k: v for k, v in runs.items() if k[1] in args.seeds}
    if not args.summary:
        for (arm, seed), rows in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            best = winner(rows)
            print(f"seed {seed} {arm}: best stable "
                  f"{'-' if best is None else f'{best.value:.4f} (trial {best.number})'}")
            for row in rows:
                print("  " + trial_line(row, best, args.at))
    for line in summary(runs, args.key):
        print(line)
    if args.salvaged:
        for line in pairs_lines(salvaged_pairs(runs)):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
