"""Credit for tamed configurations (autotune/search/credit.py)."""

from __future__ import annotations

import math

from autotune.search.credit import credit_params, deserves_credit, restarted_from_scratch
from autotune.search.space import parse_space


def test_credit_goes_to_effective_params_inside_the_space() -> None:
    space = parse_space({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                         "label_smoothing": {"choices": [0.0, 0.1]}})
    sampled = {"learning_rate": 9e-3, "label_smoothing": 0.1}
    params, why = credit_params(space, sampled, {"learning_rate": 3e-3,
                                                 "label_smoothing": 0.0, "epochs": 6})
    assert params == {"learning_rate": 3e-3, "label_smoothing": 0.0} and why == "enqueued"
    params, why = credit_params(space, sampled, {"learning_rate": 3e-5,
                                                 "label_smoothing": 0.1})
    assert params is None and "learning_rate outside" in why
    params, why = credit_params(space, sampled, {**sampled, "skip_batches": [3, 4]})
    assert params is None and "no searched parameter" in why
    assert deserves_credit(1.0, []) and deserves_credit(1.0, [0.9, 1.0, 1.2])
    assert not deserves_credit(1.1, [0.9, 1.0, 1.05]) and not deserves_credit(math.inf, [])


def test_a_restart_from_the_initial_weights_is_its_own_credit() -> None:
    space = parse_space({"learning_rate": {"low": 1e-3, "high": 0.3, "log": True},
                         "label_smoothing": {"choices": [0.0, 0.1]}})
    collapse = {"kind": "recovered", "rolled_back_to": 0,
                "changes": {"learning_rate": [0.05, 0.005]}}
    assert restarted_from_scratch(space, [{"kind": "diverged"}, collapse])
    # A later recovery from a trained epoch, or a change outside the space: not a clean rerun.
    later = {"kind": "recovered", "rolled_back_to": 2,
             "changes": {"learning_rate": [0.005, 0.0017]}}
    assert not restarted_from_scratch(space, [collapse, later])
    assert not restarted_from_scratch(space, [{**collapse, "changes": {
        "learning_rate": [0.05, 0.005], "skip_batches": [[], [3, 4]]}}])
    assert not restarted_from_scratch(space, [{**collapse, "rolled_back_to": 3}])
    assert not restarted_from_scratch(space, [])
