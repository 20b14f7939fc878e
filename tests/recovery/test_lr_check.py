"""The learning-rate change check (autotune/recovery/lr_check.py)."""

from __future__ import annotations

import pytest

from autotune.recovery.lr_check import LrExpectation, expect, judge

UNDONE = [{"epoch": 3, "lr": 0.3}, {"epoch": 4, "lr": 0.28}]


def test_the_next_epochs_rate_before_the_rollback_is_the_reference() -> None:
    expectation = expect({"learning_rate": [0.3, 0.1]}, UNDONE, resume_epoch=2)
    assert expectation == LrExpectation(epoch=3, before=0.3, factor=pytest.approx(1 / 3))
    assert expectation is not None and expectation.expected == pytest.approx(0.1)


@pytest.mark.parametrize("changes", [
    {"grad_clip": [0.0, 1.0]},                                       # no rate change
    {"learning_rate": [0.3, 0.1], "warmup_epochs": [0.0, 2.0]},      # a new warmup moves it
    {"learning_rate": [0.3, 0.1], "schedule": ["cosine", "constant"]},
])
def test_no_check_where_the_rate_moves_for_other_reasons(changes: dict) -> None:
    assert expect(changes, UNDONE, resume_epoch=2) is None


def test_no_check_without_a_record_of_that_epoch() -> None:
    assert expect({"learning_rate": [0.3, 0.1]}, UNDONE, resume_epoch=5) is None


@pytest.mark.parametrize(("applied", "words"), [
    (0.1, None),                              # applied as asked
    (0.105, None),                            # within 10%
    (0.3, "scheduler undid the cut"),         # rebuilt from its own base rate
    (0.033, "scheduler compounded the cut"),  # cut twice
    (0.2, "did not apply the cut fully"),
    (None, None),                             # the trainer reports no rate
])
def test_judge(applied: float | None, words: str | None) -> None:
    message = judge(LrExpectation(3, 0.3, 1 / 3), applied)
    if words is None:
        assert message is None
    else:
        assert message is not None and words in message and "base_lrs" in message


def test_a_record_from_before_an_earlier_rate_cut_is_no_reference() -> None:
    # Seen in a search: a cut at global epoch 7 rolled back to epoch 3, so epochs 1-3 on the
    # timeline ran at the old base rate; a later rollback to 0 with another cut must not
    # expect a third of epoch 1's old rate.
    undone = [{"epoch": 1, "global_epoch": 2, "lr": 0.0016},
              {"epoch": 4, "global_epoch": 8, "lr": 0.002}]
    cut = {"learning_rate": [0.002, 0.002 / 3]}
    assert expect(cut, undone, 0, since_global_epoch=7) is None
    assert expect(cut, undone, 3, since_global_epoch=7) == LrExpectation(4, 0.002, 1 / 3)
    assert expect(cut, undone, 0) == LrExpectation(1, 0.0016, 1 / 3)  # no earlier cut
