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
from autotune.search.triage import FreshTrial, fresh_trial, peer_values, triage, win_chance
from autotune.search.vocabulary import SearchEvent, TriageChoice
from tests.search.common import SPACE, add_trial

RECOVER, PRUNE = TriageChoice.RECOVER, TriageChoice.PRUNE

# Five finished trials with these values at epochs 1-4.
GOOD = [{1: 1.6, 2: 1.4, 3: 1.3, 4: 1.25}, {1: 1.7, 2: 1.5, 3: 1.4, 4: 1.35},
        {1: 1.5, 2: 1.3, 3: 1.2, 4: 1.15}, {1: 1.8, 2: 1.6, 3: 1.5, 4: 1.45},
        {1: 1.6, 2: 1.45, 3: 1.35, 4: 1.3}]  # medians: epoch 2 1.45, epoch 3 1.35, 4 1.3
# Five trials the pruner stopped after one epoch: fresh trials are cheap in such a study.
CHEAP = [{1: 2.0}] * 5


def _study(peers: list[dict[int, float]], pruned: list[dict[int, float]] | None = None
           ) -> optuna.Study:
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())  # triage alone
    for values in peers:
        add_trial(study, values, value=min(values.values()))
    for values in pruned or []:
        add_trial(study, values, state=TrialState.PRUNED)
    return study


@pytest.mark.parametrize(("peers", "pruned", "epoch", "best", "planned", "choice", "why"), [
    # before the pruner's warmup: a restart from the initial weights, or after one epoch
    (GOOD, [], 0, math.inf, 4, RECOVER, "before the pruner's 2 warmup epochs"),
    (GOOD, [], 1, 9.0, 4, RECOVER, "before the pruner's 2 warmup epochs"),
    # no peer reached the epoch yet
    ([], [], 2, 9.0, 4, RECOVER, "0 other finished trial(s) reached epoch 2, fewer than 1"),
    # weighed from the first peer (TRIAGE_MIN_PEERS), cautiously: behind the only peer, a
    # smoothed 1/3 chance in 2 epochs beats a fresh trial's 1/2 in 4; behind two, 6.2%
    # does not beat 1/3 in 4; behind four, long before the pruner's 5 startup trials
    (GOOD[:1], [], 2, 9.0, 4, RECOVER, "a 33.3% chance of beating the best (16.7% an epoch)"),
    (GOOD[:2], [], 2, 9.0, 4, PRUNE, "worse than the median 1.4500 of 2 other trials"),
    (GOOD[:4], [], 2, 9.0, 4, PRUNE, "worse than the median 1.4500 of 4 other trials"),
    # ahead of every peer: a 46% chance of a new best in 2 epochs, a fresh trial 1/6 in 4
    (GOOD, [], 2, 1.2, 4, RECOVER, "competitive"),
    # At the median (new rule, was RECOVER): a 3.1% chance of a new best (0.5 ** 5) for
    # the 2 (1) epochs left, 1.6% (3.1%) an epoch, against 16.7% in 4 epochs (4.2% an
    # epoch) for a fresh trial.
    (GOOD, [], 2, 1.45, 4, PRUNE, "at least as good as the median 1.4500 of 5 other"),
    (GOOD, [], 3, 1.35, 4, PRUNE, "at least as good as the median 1.3500 of 5 other"),
    # at the median, nothing left to run after the rollback: free, so recovered
    (GOOD, [], 4, 1.3, 4, RECOVER, "nothing is left to run after the rollback"),
    # behind the median
    (GOOD, [], 2, 1.46, 4, PRUNE, "worse than the median 1.4500 of 5 other trials"),
    (GOOD, [], 3, 1.5, 4, PRUNE, "worse than the median 1.3500 of 5"),
    # second of six at epoch 2 (18.6% chance); fresh trials cost 2.5 epochs for 1/11 (3.6%
    # an epoch): worth 2 more epochs (9.3% an epoch), not 14 (1.3% an epoch)
    (GOOD, CHEAP, 2, 1.35, 4, RECOVER, "recovering runs 2 more epoch(s) for a 18.6% chance"),
    (GOOD, CHEAP, 2, 1.35, 16, PRUNE, "a fresh trial about 2.5 epochs for 9.1% (3.6% an"),
])
def test_recover_or_prune(peers: list[dict[int, float]], pruned: list[dict[int, float]],
                          epoch: int, best: float, planned: int, choice: str,
                          why: str) -> None:
    study = _study(peers, pruned)
    me = add_trial(study, {1: 2.0}, state=TrialState.RUNNING)
    trials = study.get_trials()
    decision = triage(epoch, best, peer_values(trials, me.number, epoch),
                      remaining=planned - epoch,
                      fresh=fresh_trial(trials, me.number, planned))
    assert decision.choice == choice
    assert why in decision.reason


def test_win_chance_and_a_fresh_trial() -> None:
    # Ahead of all n peers: ((n + 1) / (n + 2)) ** n; at a random rank it averages 1/(n+1).
    assert win_chance(0.5, [1.0, 2.0]) == pytest.approx((3 / 4) ** 2)
    assert win_chance(3.0, [1.0, 2.0]) == pytest.approx((1 / 4) ** 2)
    assert win_chance(1.0, [1.0]) == pytest.approx(1.5 / 3)
    assert win_chance(math.inf, [1.0]) == 0.0
    n = 6
    ranks = [win_chance(r + 0.5, list(range(1, n + 1))) for r in range(n + 1)]
    assert sum(ranks) / len(ranks) == pytest.approx(1 / (n + 1), rel=0.35)
    study = _study(GOOD, CHEAP)
    assert fresh_trial(study.get_trials(), -1, 16) == FreshTrial(10, 2.5)
    assert fresh_trial([], 0, 16) == FreshTrial(0, 16)
    assert FreshTrial(10, 2.5).chance == pytest.approx(1 / 11)


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
