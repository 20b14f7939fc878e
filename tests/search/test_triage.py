"""Recover or prune: the decision, on a real in-memory study (autotune/search/triage.py)."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from autotune.cli.search_commands import SearchProgress
from autotune.search.objective import Objective, ObjectiveSettings
from autotune.search.space import parse_space
from autotune.search.triage import peer_values, triage
from autotune.search.vocabulary import SearchEvent, TriageChoice
from tests.search.common import SPACE, add_trial

# Five finished trials (the pruner's startup) with these values at epochs 1-3.
GOOD = [{1: 1.6, 2: 1.4, 3: 1.3}, {1: 1.7, 2: 1.5, 3: 1.4}, {1: 1.5, 2: 1.3, 3: 1.2},
        {1: 1.8, 2: 1.6, 3: 1.5}, {1: 1.6, 2: 1.45, 3: 1.35}]  # median at epoch 2: 1.45


def _study(peers: list[dict[int, float]]) -> optuna.Study:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())  # triage alone
    for values in peers:
        add_trial(study, values, value=min(values.values()))
    return study


@pytest.mark.parametrize(("peers", "epoch", "best", "choice", "why"), [
    # before the pruner's warmup: a restart from the initial weights, or after one epoch
    (GOOD, 0, math.inf, TriageChoice.RECOVER, "before the pruner's 2 warmup epochs"),
    (GOOD, 1, 9.0, TriageChoice.RECOVER, "before the pruner's 2 warmup epochs"),
    # too few peers reached the epoch
    (GOOD[:4], 2, 9.0, TriageChoice.RECOVER,
     "4 other finished trial(s) reached epoch 2, fewer than"),
    # competitive: at or below the median of the peers there
    (GOOD, 2, 1.45, TriageChoice.RECOVER, "competitive"),
    (GOOD, 2, 1.2, TriageChoice.RECOVER, "competitive"),
    (GOOD, 3, 1.35, TriageChoice.RECOVER, "competitive"),
    # not competitive
    (GOOD, 2, 1.46, TriageChoice.PRUNE, "worse than the median 1.4500 of 5 other trials"),
    (GOOD, 3, 1.5, TriageChoice.PRUNE, "worse than the median 1.3500 of 5"),
])
def test_recover_or_prune(peers: list[dict[int, float]], epoch: int, best: float,
                          choice: str, why: str) -> None:
    study = _study(peers)
    me = add_trial(study, {1: 2.0}, state=TrialState.RUNNING)
    decision = triage(epoch, best, peer_values(study.get_trials(), me.number, epoch))
    assert decision.choice == choice
    assert why in decision.reason


def test_peers_are_complete_trials_on_their_timelines() -> None:
    study = _study(GOOD[:2])
    add_trial(study, {1: 0.1, 2: 0.1}, state=TrialState.PRUNED)  # not a peer, as in Optuna
    add_trial(study, {1: 1.9}, value=1.9)  # stopped before epoch 2: not a peer there
    # A recovered trial: reports at global epochs 1, 2, 3; the rollback undid epoch 2, so
    # its logical epoch 2 is the report at global epoch 3.
    add_trial(study, {1: 1.6, 2: 9.0, 3: 1.1}, value=1.1, timeline=[[1, 1], [3, 2]])
    me = add_trial(study, {1: 0.5, 2: 0.5}, state=TrialState.RUNNING)
    assert sorted(peer_values(study.get_trials(), me.number, 2)) == [1.1, 1.4, 1.5]


def _objective(tmp_path: Path, events: list[SearchEvent]) -> Objective:
    space = parse_space({**SPACE, "epochs": 3})
    return Objective(ObjectiveSettings(space=space, profile="tiny", artifacts=tmp_path,
                                       device="cpu"), on_event=events.append)


@pytest.mark.slow
@pytest.mark.parametrize(("peer_value", "state"), [(0.01, TrialState.PRUNED),
                                                    (99.0, TrialState.COMPLETE)])
def test_a_search_trial_is_pruned_or_recovered_by_how_it_compares(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, peer_value: float,
        state: TrialState) -> None:
    # 4 steps an epoch: a NaN at step 9 is in epoch 3, and the rollback goes to epoch 2.
    monkeypatch.setenv("AUTOTUNE_INJECT", "nan_loss@9")
    study = _study([{1: peer_value, 2: peer_value, 3: peer_value}] * 5)
    events: list[SearchEvent] = []
    study.optimize(_objective(tmp_path, events), n_trials=1)
    trial = study.get_trials()[5]  # (a recovered one may have queued its credit trial)
    assert trial.state == state
    (entry,) = trial.user_attrs["triage"]
    assert entry["divergence"] == "nonfinite_loss" and entry["epoch"] == 2
    console = Console(record=True, width=300)  # the progress line says what was chosen
    progress = SearchProgress(console)
    for event in events:
        progress(event)
    text = console.export_text()
    if state == TrialState.PRUNED:
        assert "trial 5 is pruned instead of recovered (nonfinite_loss, rollback to epoch 2)"\
            ": not competitive" in text
        assert entry["choice"] == TriageChoice.PRUNE
        assert trial.user_attrs["pruned_reason"].startswith(
            "diverged (nonfinite_loss) and pruned instead of recovered: not competitive")
        assert trial.user_attrs["recoveries"] == 0 and trial.user_attrs["divergences"] == 1
    else:
        assert "trial 5 recovers (nonfinite_loss, rollback to epoch 2): competitive" in text
        assert entry["choice"] == TriageChoice.RECOVER and "competitive" in entry["reason"]
        assert trial.user_attrs["recoveries"] == 1 and trial.user_attrs["stable"]
