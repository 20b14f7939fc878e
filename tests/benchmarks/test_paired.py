"""The paired comparison the search benchmark reports (benchmarks/paired.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import paired  # noqa: E402


def _rows(on: list[float], off: list[float]) -> list[dict[str, object]]:
    return ([{"seed": s, "arm": "on", "best_stable": v} for s, v in enumerate(on)]
            + [{"seed": s, "arm": "off", "best_stable": v} for s, v in enumerate(off)])


def test_wins_ties_losses_and_a_significant_paired_difference() -> None:
    off = [1.5, 1.4, 1.6, 1.45, 1.55, 1.5, 1.3, 1.42]
    on = [v - 0.05 for v in off[:7]] + [off[7]]  # better on 7 seeds, tied on one
    c = paired.compare(_rows(on, off), "on", "off")
    assert (c["wins"], c["ties"], c["losses"], c["seeds"]) == (7, 1, 0, 8)
    assert c["mean_diff"] == pytest.approx(-0.05 * 7 / 8)
    assert c["p"] is not None and c["p"] < 0.05  # 7 untied pairs all one way: p = 1/64


def test_six_pairs_are_the_least_that_can_reach_p_below_005() -> None:
    five = paired.compare(_rows([1.0] * 5, [1.1] * 5), "on", "off")
    six = paired.compare(_rows([1.0] * 6, [1.1] * 6), "on", "off")
    assert five["p"] > 0.05 and six["p"] < 0.05


def test_no_stable_configuration_scores_the_loss_of_knowing_nothing() -> None:
    rows = _rows([1.2, math.inf], [math.inf, 1.3])
    c = paired.compare(rows, "on", "off")
    assert (c["wins"], c["losses"]) == (1, 1)
    s = paired.summary(rows)
    assert s["on"]["no_stable"] == 1 and s["on"]["mean"] == pytest.approx(
        (1.2 + math.log(12)) / 2)


def test_all_ties_have_no_p_value() -> None:
    assert paired.compare(_rows([1.0, 1.1], [1.0, 1.1]), "on", "off")["p"] is None


def test_the_anytime_curve_is_a_step_function_averaged_over_seeds() -> None:
    a, b = [[10.0, 1.5], [30.0, 1.2]], [[20.0, 1.4]]
    assert paired.step_value(a, 5.0) == math.inf
    assert paired.step_value(a, 10.0) == 1.5 and paired.step_value(a, 40.0) == 1.2
    mean = paired.mean_curve([a, b], [5.0, 25.0, 40.0])
    assert mean == pytest.approx([math.log(12), (1.5 + 1.4) / 2, (1.2 + 1.4) / 2])


def test_at_equal_time_each_search_is_read_where_the_shorter_one_ended() -> None:
    rows = [{"seed": 0, "arm": "on", "best_stable": 1.0, "wall_s": 100.0,
             "curve": [[20.0, 1.6], [90.0, 1.0]]},
            {"seed": 0, "arm": "off", "best_stable": 1.5, "wall_s": 40.0,
             "curve": [[30.0, 1.5]]}]
    c = paired.compare_at_equal_time(rows, "on", "off")
    assert (c["wins"], c["losses"]) == (0, 1)  # at 40 s: on 1.6, off 1.5
    assert c["mean_diff"] == pytest.approx(0.1)


def test_saved_compute_reaches_only_the_seeds_whose_best_moved_in_that_last_stretch() -> None:
    def row(seed: int, arm: str, curve: list[list[float]], wasted: float) -> dict[str, object]:
        return {"seed": seed, "arm": arm, "best_stable": curve[-1][1], "curve": curve,
                "wall_s": 100.0, "wasted_s": wasted}

    rows = [  # seed 0: plain's best moved at 95 s, within the 20% `on` saved: reachable
        row(0, "plain", [[10.0, 1.5], [95.0, 1.3]], 30.0), row(0, "on", [[10.0, 1.4]], 10.0),
        # seed 1: plain's best moved at 50 s, before the 20% `on` saved: out of reach
        row(1, "plain", [[10.0, 1.5], [50.0, 1.3]], 30.0), row(1, "on", [[10.0, 1.4]], 10.0),
        # seed 2: `on` wasted more than plain: it saved nothing, so nothing is reachable
        row(2, "plain", [[10.0, 1.5], [99.0, 1.3]], 5.0), row(2, "on", [[10.0, 1.4]], 20.0)]
    r = paired.saved_compute_reach(rows, "on", "plain")
    assert (r["seeds"], r["moved"]) == (3, 1)
    assert r["mean_share"] == pytest.approx((0.2 + 0.2 + 0.0) / 3)
