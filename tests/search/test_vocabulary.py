"""The search's vocabulary keeps the strings study files already hold."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from autotune.cli.search_commands import RENDERERS
from autotune.search.vocabulary import (
    PRUNER_STARTUP_TRIALS,
    PRUNER_WARMUP_EPOCHS,
    NextAction,
    SearchEvent,
    SearchEventKind,
    StudyAttr,
    SystemAttr,
    TriageChoice,
    TrialAttr,
)

# The keys studies written before the vocabulary module hold: renaming one orphans them.
STORED_TRIAL_KEYS = {
    "effective_config", "events", "changes", "reasons", "divergences", "recoveries",
    "rolled_back_steps", "status", "stable", "best_epoch", "global_epochs", "pruned_reason",
    "run_dir", "worker", "timeline", "triage", "credit", "credit_of", "stand_in_for",
    "surplus", "interrupted", "fault", "retry_of", "batch_skips",
}


def _values(namespace: type) -> set[str]:
    return {v for k, v in vars(namespace).items() if k.isupper()}


def test_attribute_keys_are_the_stored_strings() -> None:
    assert _values(TrialAttr) == STORED_TRIAL_KEYS
    assert _values(StudyAttr) == {"autotune_plan", "confirmation", "confirmed", "held_out"}
    assert _values(SystemAttr) == {"autotune:heartbeat", "constraints:diverged"}


def test_enum_values_are_the_strings_on_the_wire() -> None:
    assert [k.value for k in SearchEventKind] == [
        "trial_start", "epoch", "recovery", "triage", "trial_end", "tally", "taken", "retry",
        "error", "confirm_start", "confirm_end"]
    assert [c.value for c in TriageChoice] == ["recover", "prune"]
    assert [a.value for a in NextAction] == ["run", "wait", "stop"]


def test_the_pruner_and_triage_share_their_numbers() -> None:
    from optuna.pruners import MedianPruner

    from autotune.search.pruner import default_pruner

    wrapped = default_pruner()._wrapped
    assert isinstance(wrapped, MedianPruner)
    assert (wrapped._n_startup_trials, wrapped._n_warmup_steps) == (
        PRUNER_STARTUP_TRIALS, PRUNER_WARMUP_EPOCHS)


@pytest.mark.parametrize("kind", list(SearchEventKind))
def test_a_search_event_survives_a_worker_pipe(kind: SearchEventKind) -> None:
    """Workers send events as JSON lines; the kind comes back as the Enum."""
    event = SearchEvent(kind, 3, {"x": 1})
    line = json.dumps(asdict(event))
    assert json.loads(line)["kind"] == kind.value
    assert SearchEvent(**json.loads(line)) == event


def test_every_kind_but_error_has_a_renderer() -> None:
    assert set(SearchEventKind) - set(RENDERERS) == {SearchEventKind.ERROR}
