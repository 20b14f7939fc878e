"""Verdicts and reasons (autotune/detect/verdict.py)."""

from __future__ import annotations

import json
import math

from autotune.detect import (
    OK,
    Reason,
    Verdict,
    check_nonfinite,
)

NAN, INF = math.nan, math.inf


def test_reason_values_are_the_contract_strings() -> None:
    assert [r.value for r in Reason] == ["nonfinite_loss", "nonfinite_grad", "loss_increase",
                                         "loss_spike", "grad_explosion", "overfitting",
                                         "collapsed"]
    assert all(r.message and r.message[0].islower() for r in Reason)
    assert Reason("loss_spike") is Reason.LOSS_SPIKE


def test_verdict_is_truthy_only_when_diverged() -> None:
    assert not OK
    assert OK == Verdict(False)
    assert Verdict(True, Reason.LOSS_SPIKE)


def test_verdict_to_dict_is_json() -> None:
    verdict = check_nonfinite(NAN, None, 7)
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert data == {"diverged": True, "reason": "nonfinite_loss",
                    "message": "The training loss is nan at step 7.",
                    "evidence": {"loss": None}, "step": 7, "epoch": None}


MARGINAL, TRAIN_MARGINAL = 1.747, 1.759
