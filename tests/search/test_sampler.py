"""The sampler shows TPE the configurations that restarts trained (autotune.search.sampler)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers import TPESampler
from optuna.trial import TrialState

from autotune.events import Event, EventKind
from autotune.search import tally, winner_of
from autotune.search.dashboard import TrialStory
from autotune.search.objective import Objective, ObjectiveSettings
from autotune.search.sampler import (
    CreditTPESampler,
    _CreditView,
    sampled_view,
    stand_in,
    stand_ins,
)
from autotune.search.space import parse_space

LR = FloatDistribution(1e-3, 0.3, log=True)


def _trial(lr: float, value: float, credit: dict | None = None, diverged: int = 0,
           state: TrialState = TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    attrs = {"stable": True, "divergences": diverged}
    if credit is not None:
        attrs["credit"] = credit
    trial = optuna.trial.create_trial(
        params={"learning_rate": lr}, distributions={"learning_rate": LR},
        value=value if state == TrialState.COMPLETE else None, state=state,
        intermediate_values={1: value}, user_attrs=attrs)
    if diverged:
        trial.system_attrs = {**trial.system_attrs}
        trial.set_constraint("diverged", float(diverged))
    return trial


RESTARTED = {"enqueued": False, "stand_in": True, "params": {"learning_rate": 3e-3}}


def test_divergences_put_down_to_the_batch_do_not_count_against_the_configuration() -> None:
    # Salvaged by skipping one bad batch, nothing else changed: TPE sees it feasible.
    skipped = _trial(0.01, 1.2)
    skipped.user_attrs = {**skipped.user_attrs, "divergences": 1, "batch_skips": 1}
    assert sampled_view(skipped).constraints == {"diverged": 0.0}
    # One skip, then a second NaN that climbed the ladder: the configuration is suspect.
    climbed = _trial(0.01, 1.2)
    climbed.user_attrs = {**climbed.user_attrs, "divergences": 2, "batch_skips": 1}
    assert sampled_view(climbed).constraints == {"diverged": 1.0}
    # Studies written before `batch_skips` existed read as before.
    assert sampled_view(_trial(0.01, 1.2, diverged=2)).constraints == {"diverged": 2.0}


def test_a_stand_in_is_the_effective_configuration_with_the_trials_value() -> None:
    study = optuna.create_study()
    study.add_trial(_trial(0.2, 0.5, RESTARTED, diverged=1))
    [source] = study.get_trials()
    seen = stand_in(source)
    assert seen is not None
    assert seen.params == {"learning_rate": 3e-3} and seen.value == 0.5
    assert seen.number == source.number and seen.state == TrialState.COMPLETE
    assert seen.constraints == {}  # feasible: the effective configuration did not diverge
    # Nothing to stand in for: no credit, a credit that asks for none, a pruned trial, or
    # parameters the trial's distributions cannot hold.
    assert stand_in(_trial(0.2, 0.5)) is None
    assert stand_in(_trial(0.2, 0.5, {**RESTARTED, "stand_in": False})) is None
    assert stand_in(_trial(0.2, 0.5, RESTARTED, state=TrialState.PRUNED)) is None
    assert stand_in(_trial(0.2, 0.5, {**RESTARTED, "params": {"learning_rate": 3.0}})) is None
    assert stand_in(_trial(0.2, 0.5, {**RESTARTED, "params": {"warmup_epochs": 1.0}})) is None


def _study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    # Ten feasible trials between 0.02 and 0.3, the best at the top; one at 0.2 that
    # diverged, was restarted at 3e-3 and reached 0.5, better than all of them.
    study = optuna.create_study(sampler=sampler)
    for i in range(10):
        lr = 0.02 * (0.3 / 0.02) ** (i / 9)
        study.add_trial(_trial(lr, 2.0 - i / 10))
    study.add_trial(_trial(0.2, 0.5, RESTARTED, diverged=1))
    return study


def _draws(sampler: optuna.samplers.BaseSampler) -> list[float]:
    study = _study(sampler)
    draws = []
    for _ in range(12):
        trial = study.ask({"learning_rate": LR})
        draws.append(trial.params["learning_rate"])
        study.tell(trial, state=TrialState.FAIL)  # FAILED trials: TPE leaves them out
    return draws


def _distance(draws: list[float], lr: float) -> float:
    return statistics.median(abs(math.log(x / lr)) for x in draws)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_samples_where_the_restart_learned(seed: int) -> None:
    # Plain TPE sees the restarted trial only as an infeasible 0.2 and wanders over the
    # low end it knows nothing of; with its stand-in it samples around 3e-3 (seeded draws:
    # median distance 0.05-0.10 in log units, against 0.25-0.38 without).
    plain = _draws(TPESampler(seed=seed, n_startup_trials=5))
    credited = _draws(CreditTPESampler(seed=seed, n_startup_trials=5))
    assert _distance(credited, 3e-3) < 0.5 * _distance(plain, 3e-3), (plain, credited)
    assert _distance(credited, 3e-3) < math.log(1.25)


def test_stand_ins_stay_out_of_the_studys_own_trials() -> None:
    study = _study(CreditTPESampler(seed=0, n_startup_trials=5))
    trials = study.get_trials()
    assert len(trials) == 11 and len(stand_ins(trials)) == 1
    counts = tally(trials, 30)
    assert counts.done == 11 and counts.diverged == 1 and counts.recovered == 1
    winner = winner_of(trials)
    assert winner is not None and winner.number == 10
    assert winner.params == {"learning_rate": 0.2}  # as sampled, as Optuna stores it


def test_a_collapsed_trial_restarted_from_scratch_gets_a_stand_in(tmp_path: Path) -> None:
    # On the small slice a peak of 0.005 without warmup sits at the colour-frequency level:
    # the collapse restarts the trial from its initial weights at a third of the rate,
    # inside the space, so its credit is a stand-in, not a queued trial.
    space = parse_space({"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True},
                         "warmup_epochs": 0.0, "epochs": 6, "max_tasks": 40})
    study = optuna.create_study(sampler=CreditTPESampler(seed=0),
                                pruner=optuna.pruners.NopPruner())
    study.enqueue_trial({"learning_rate": 0.005})
    study.optimize(Objective(ObjectiveSettings(space, "tiny", tmp_path, device="cpu")),
                   n_trials=1)
    [trial] = study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["stable"]
    assert trial.user_attrs["changes"]["learning_rate"][0] == 0.005
    credit = trial.user_attrs["credit"]
    assert credit["stand_in"] and not credit["enqueued"]
    effective = trial.user_attrs["effective_config"]["learning_rate"]
    assert credit["params"] == {"learning_rate": effective}
    assert trial.constraints == {"diverged": 0.0}  # stored: it ended stable
    divergences = float(trial.user_attrs["divergences"])
    assert sampled_view(trial).constraints == {"diverged": divergences}  # what TPE sees
    [seen] = stand_ins(study.get_trials())
    assert seen.params == {"learning_rate": effective} and seen.value == trial.value
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 0  # nothing queued


def test_the_progress_says_what_the_sampler_was_told() -> None:
    from rich.console import Console

    from autotune.cli.search_commands import SearchProgress
    from autotune.search.vocabulary import SearchEvent

    console = Console(record=True, width=200)
    progress = SearchProgress(console)
    end = {"state": "COMPLETE", "value": 1.42, "recoveries": 1,
           "changes": {"learning_rate": [0.041, 0.0137]}}
    progress(SearchEvent("trial_end", 2, {**end, "credit": RESTARTED}))
    progress(SearchEvent("trial_end", 3, {**end, "credit": {"enqueued": True}}))
    text = console.export_text()
    assert "trial 2: val_loss 1.4200; 1 recovery(ies)" in text
    assert "the sampler sees its effective parameters with this value" in text
    assert "its effective parameters are queued as a new trial" in text


# -- what TPE sees of each kind of trial -----------------------------------------------------

DIVERGED = Event(EventKind.DIVERGED, "nonfinite_loss", 2, 2)
RECOVERED = Event(EventKind.RECOVERED, "nonfinite_loss", 2, 2, rolled_back_to=1,
                  changes={"learning_rate": [0.2, 0.0667]})
GAVE_UP = Event(EventKind.GAVE_UP, "nonfinite_loss", 3, 4)
KINDS = {  # kind: (state, events, stable) as the objective records them
    "clean": (TrialState.COMPLETE, [], True),
    "salvaged": (TrialState.COMPLETE, [DIVERGED, RECOVERED], True),
    "given up": (TrialState.PRUNED, [DIVERGED, RECOVERED, DIVERGED, GAVE_UP], False),
    "pruned": (TrialState.PRUNED, [], False),
}


def _recorded(kind: str, value: float = 1.0) -> optuna.trial.FrozenTrial:
    """A finished trial with the state, attributes and stored constraint the objective
    gives that kind of trial (`TrialStory`)."""
    state, events, stable = KINDS[kind]
    story = TrialStory(number=0, status="completed" if stable else "gave_up", stable=stable,
                       params={"learning_rate": 0.2}, effective={}, events=events)
    trial = optuna.trial.create_trial(
        params={"learning_rate": 0.2}, distributions={"learning_rate": LR},
        value=value if state == TrialState.COMPLETE else None, state=state,
        intermediate_values={1: value}, user_attrs={**story.attrs(), "stable": stable})
    trial.system_attrs = {**trial.system_attrs}
    trial.set_constraint("diverged", float(story.unrecovered))
    return trial


@pytest.mark.parametrize(("kind", "stored"), [
    ("clean", 0.0), ("salvaged", 0.0), ("given up", 2.0), ("pruned", 0.0)])
def test_what_the_study_stores_of_each_kind_of_trial(kind: str, stored: float) -> None:
    assert _recorded(kind).constraints == {"diverged": stored}


@pytest.mark.parametrize(("kind", "state", "seen"), [
    ("clean", TrialState.COMPLETE, 0.0),      # feasible
    ("salvaged", TrialState.COMPLETE, 1.0),   # the sampled configuration diverged once
    ("given up", TrialState.PRUNED, 2.0),     # diverged twice, then the budget was spent
    ("pruned", TrialState.PRUNED, 0.0),       # stopped by the pruner: feasible, pruned
])
def test_what_tpe_sees_of_each_kind_of_trial(kind: str, state: TrialState,
                                             seen: float) -> None:
    study = optuna.create_study(sampler=CreditTPESampler(seed=0))
    study.add_trial(_recorded(kind))
    [trial] = _CreditView(study)._get_trials(deepcopy=False)  # what TPE reads
    assert (trial.state, trial.constraints) == (state, {"diverged": seen})


def test_optunas_best_trial_is_autotunes_winner() -> None:
    # Every stable trial is feasible in the study; the salvaged one is the best.
    study = optuna.create_study()
    for kind, value in (("clean", 1.0), ("salvaged", 0.5), ("given up", 0.1), ("pruned", 0.2)):
        study.add_trial(_recorded(kind, value))
    winner = winner_of(study.get_trials())
    assert winner is not None and study.best_trial.number == winner.number == 1
