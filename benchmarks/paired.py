"""Paired comparison of search arms over seeds: the figures `search_vs_optuna.py` reports.

Pure functions over the rows of `search_vs_optuna.py --json` (one row per seed and arm).
A search that found no stable configuration scores `NO_STABLE` (the cross-entropy of a
model that knows nothing, ln 12: worse than any trained run), so every seed is paired.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NO_STABLE = math.log(12)  # the loss of a uniform guess over the 12 token classes
TIE = 1e-9


def score(row: Mapping[str, Any]) -> float:
    value = float(row["best_stable"])
    return value if math.isfinite(value) else NO_STABLE


def by_arm(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    out: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["arm"]), {})[int(row["seed"])] = row
    return out


def wilcoxon_p(diffs: Sequence[float]) -> float | None:
    """Two-sided p-value of the Wilcoxon signed-rank test on paired differences (zeros
    dropped); None when no pair differs."""
    from scipy.stats import wilcoxon

    nonzero = [d for d in diffs if abs(d) > TIE]
    if not nonzero:
        return None
    return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def compare(rows: Iterable[Mapping[str, Any]], arm: str, baseline: str) -> dict[str, Any]:
    """`arm` against `baseline` on the seeds both ran: wins (lower best stable loss), ties,
    losses, the mean difference with its standard error, and the Wilcoxon p-value."""
    arms = by_arm(rows)
    seeds = sorted(set(arms.get(arm, {})) & set(arms.get(baseline, {})))
    diffs = [score(arms[arm][s]) - score(arms[baseline][s]) for s in seeds]
    mean = statistics.fmean(diffs) if diffs else math.nan
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return {"arm": arm, "baseline": baseline, "seeds": len(seeds),
            "wins": sum(d < -TIE for d in diffs), "ties": sum(abs(d) <= TIE for d in diffs),
            "losses": sum(d > TIE for d in diffs), "mean_diff": mean, "se_diff": se,
            "p": wilcoxon_p(diffs)}


def compare_at_equal_time(rows: Iterable[Mapping[str, Any]], arm: str,
                          baseline: str) -> dict[str, Any]:
    """As `compare`, with each seed's two searches read off their anytime curves at the
    same wall time: the shorter of the two searches' (the budget the cheaper arm used)."""
    arms = by_arm(rows)
    equal = []
    for seed in sorted(set(arms.get(arm, {})) & set(arms.get(baseline, {}))):
        a, b = arms[arm][seed], arms[baseline][seed]
        t = min(float(a["wall_s"]), float(b["wall_s"]))
        equal += [{"seed": seed, "arm": arm, "best_stable": step_value(a["curve"], t)},
                  {"seed": seed, "arm": baseline, "best_stable": step_value(b["curve"], t)}]
    return compare(equal, arm, baseline)


def saved_compute_reach(rows: Iterable[Mapping[str, Any]], arm: str,
                        baseline: str) -> dict[str, Any]:
    """How many seeds saving compute alone could turn: per seed, the share of the
    baseline's wall time that `arm` did not waste where the baseline did (the difference of
    their `wasted_s`, over the baseline's `wall_s`), and whether the baseline's own best
    improved within that last share of its search. A seed whose best did not move over its
    last stretch gains nothing from that stretch again, so the count bounds, roughly, the
    seeds `arm` can win by saving the baseline's waste and nothing else."""
    arms = by_arm(rows)
    seeds = sorted(set(arms.get(arm, {})) & set(arms.get(baseline, {})))
    shares, moved = [], 0
    for seed in seeds:
        a, b = arms[arm][seed], arms[baseline][seed]
        wall = float(b["wall_s"])
        share = max(0.0, float(b.get("wasted_s") or 0) - float(a.get("wasted_s") or 0)) / wall
        shares.append(share)
        moved += step_value(b["curve"], wall) < step_value(b["curve"], (1 - share) * wall) - TIE
    return {"arm": arm, "baseline": baseline, "seeds": len(seeds), "moved": moved,
            "mean_share": statistics.fmean(shares) if shares else math.nan}


def summary(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: mean and median best stable loss (scored), seeds with none, and totals."""
    out = {}
    for arm, seeds in by_arm(rows).items():
        scores = [score(r) for r in seeds.values()]
        total = {k: sum(float(r.get(k) or 0) for r in seeds.values())
                 for k in ("trials", "diverged", "salvaged", "wasted_s", "wall_s")}
        out[arm] = {"seeds": len(scores), "mean": statistics.fmean(scores),
                    "median": statistics.median(scores),
                    "no_stable": sum(not math.isfinite(float(r["best_stable"]))
                                     for r in seeds.values()), **total}
    return out


def step_value(curve: Sequence[Sequence[float]], t: float) -> float:
    """A curve's best stable value at time t (inf before its first stable trial)."""
    best = math.inf
    for seconds, value in curve:
        if seconds > t:
            break
        best = value
    return best


def mean_curve(curves: Sequence[Sequence[Sequence[float]]],
               grid: Sequence[float]) -> list[float]:
    """The anytime curve averaged over seeds at each grid time (a seed without a stable
    trial yet scores `NO_STABLE`)."""
    out = []
    for t in grid:
        values = [step_value(c, t) for c in curves]
        out.append(statistics.fmean(v if math.isfinite(v) else NO_STABLE for v in values))
    return out


def markdown(name: str, rows: list[Mapping[str, Any]]) -> list[str]:
    """The BENCHMARKS.md rows of one workload: per arm, then `on` against each baseline."""
    out = []
    for arm, s in summary(rows).items():
        out.append(f"| {name} | {arm} | {s['seeds']} | {s['mean']:.4f} | {s['median']:.4f} | "
                   f"{s['no_stable']} | {s['trials']:.0f} | {s['diverged']:.0f} | "
                   f"{s['salvaged']:.0f} | {s['wasted_s']:.0f} | {s['wall_s']:.0f} |")
    arms = by_arm(rows)
    for baseline in ("off", "plain"):
        if "on" not in arms or baseline not in arms:
            continue
        for label, c in (("", compare(rows, "on", baseline)),
                         (", equal time", compare_at_equal_time(rows, "on", baseline))):
            p = "-" if c["p"] is None else f"{c['p']:.3f}"
            out.append(f"| {name} | on vs {baseline}{label} | {c['seeds']} | {c['wins']} / "
                       f"{c['ties']} / {c['losses']} | {c['mean_diff']:+.4f} (se "
                       f"{c['se_diff']:.4f}) | p {p} | | | | | |")
    return out


def reach_markdown(name: str, rows: list[Mapping[str, Any]]) -> list[str]:
    """The BENCHMARKS.md rows of `saved_compute_reach`: `on` against each baseline."""
    arms = by_arm(rows)
    out = []
    for baseline in ("plain", "off"):
        if "on" in arms and baseline in arms:
            r = saved_compute_reach(rows, "on", baseline)
            out.append(f"| {name} | {baseline} | {r['seeds']} | {r['mean_share']:.1%} | "
                       f"{r['moved']} |")
    return out


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    workloads = [(Path(arg).stem, json.loads(Path(arg).read_text())) for arg in sys.argv[1:]]
    print("| workload | arm | seeds | mean best stable | median | no stable | trials | "
          "diverged | salvaged | wasted s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, rows in workloads:
        print("\n".join(markdown(name, rows)))
    print("\n| workload | baseline | seeds | compute `on` saved (mean share) | "
          "seeds whose best moved in that last share |")
    print("| --- | --- | --- | --- | --- |")
    for name, rows in workloads:
        print("\n".join(reach_markdown(name, rows)))
