"""A trial's summary, note and artifact for optuna-dashboard (autotune/search/dashboard.py)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

from autotune.events import Event, EventKind
from autotune.search.dashboard import (
    MAX_ATTR_CHARS,
    TrialStory,
    compact_events,
    oversized,
    publish,
    rolled_back_steps,
    store_dir,
)
from autotune.search.objective import record_story

EVIDENCE = {"loss": "nan", "step": 10, "recent": [1.91, 1.88, 1.86, 1.85, 1.84, 1.83]}
EFFECTIVE = {"learning_rate": 6.6e-4, "warmup_epochs": 0.05, "schedule": "cosine",
             "epochs": 2, "batch_size": 32, "weight_decay": 3.9e-4, "grad_clip": 1.0,
             "label_smoothing": 0.0, "use_augmentation": True, "seed": 1}


def _diverged(epoch: int, global_epoch: int) -> Event:
    return Event(EventKind.DIVERGED, "loss_increase", epoch, global_epoch, step=40 * epoch,
                 message="validation loss 2.31 rose above its best 1.84 + 0.3",
                 evidence=EVIDENCE)


def _recovered(epoch: int, global_epoch: int, lr: float) -> Event:
    return Event(EventKind.RECOVERED, "loss_increase", epoch, global_epoch,
                 rolled_back_to=epoch - 1, changes={"learning_rate": [lr, lr / 3]},
                 actions=["rollback", "lower_lr"], level=1,
                 explanation="the validation loss rose: rolled back to the best epoch and "
                             "cut the learning rate to a third")


def _budget_spent() -> list[Event]:
    """Four recoveries and a give-up: the default budget (max_recoveries 4), spent."""
    events: list[Event] = []
    for i in range(4):
        events += [_diverged(2 + i, 2 + 2 * i), _recovered(2 + i, 2 + 2 * i, 2e-3 / 3 ** i)]
    return events + [_diverged(6, 10), Event(EventKind.GAVE_UP, "loss_increase", 6, 10,
                                             explanation="recovery budget spent")]


def _story(events: list[Event], rolled_back: list[int] | None = None) -> TrialStory:
    return TrialStory(number=3, status="completed", stable=True,
                      params={"learning_rate": 2e-3}, effective=EFFECTIVE, events=events,
                      rolled_back=rolled_back or [], timeline=[[1, 1], [3, 2]])


def test_one_full_event_record_is_most_of_the_dashboards_limit() -> None:
    # What the attribute held before: two full recoveries do not fit.
    full = [e.to_dict() for e in _budget_spent()[:4]]
    assert len(json.dumps(full)) > MAX_ATTR_CHARS


def test_a_spent_budget_fits_every_attribute_within_the_limit() -> None:
    assert oversized(_story(_budget_spent(), [3, 5, 7, 9]).attrs()) == {}


def test_twenty_recoveries_still_fit() -> None:
    events = [e for i in range(20) for e in (_diverged(i, i), _recovered(i + 1, i, 1e-3))]
    assert oversized(_story(events).attrs()) == {}


def test_compact_events_keep_every_record_when_they_fit() -> None:
    events = _budget_spent()[:2]
    assert [e["kind"] for e in compact_events(events)] == ["diverged", "recovered"]


def test_compact_events_keep_what_the_exports_read() -> None:
    [_, recovered] = compact_events(_budget_spent()[:2])
    assert recovered == {"kind": "recovered", "reason": "loss_increase", "epoch": 2,
                         "global_epoch": 2, "rolled_back_to": 1,
                         "changes": {"learning_rate": [2e-3, 2e-3 / 3]}}


def test_compact_events_over_budget_drop_the_answered_divergences_first() -> None:
    kinds = [e["kind"] for e in compact_events(_budget_spent(), budget=800)]
    assert kinds == ["recovered"] * 4 + ["gave_up"]


def test_the_summary_names_reasons_changes_and_counts() -> None:
    attrs = _story(_budget_spent()).attrs()
    assert (attrs["reasons"], attrs["changes"], attrs["divergences"], attrs["recoveries"]) == (
        ["loss_increase"] * 5, {"learning_rate": [2e-3, 2e-3 / 3 ** 3 / 3]}, 5, 4)


@pytest.mark.parametrize(("reported", "timeline", "undone"), [
    ([1, 2], None, []),                          # no rollback
    ([1, 3], [[1, 1], [3, 2]], []),              # the diverged epoch was never reported
    ([1, 2, 3], [[1, 1], [3, 2]], [2]),          # epoch 2 undone, trained again at 3
    ([1, 2, 3, 4], [[1, 1], [4, 2]], [2, 3]),
    ([1, 2], [], [1, 2]),                        # rolled back to the initial weights
])
def test_rolled_back_steps(reported: list[int], timeline: list[list[int]] | None,
                           undone: list[int]) -> None:
    assert rolled_back_steps(reported, timeline) == undone


def test_the_note_marks_the_undone_values() -> None:
    note = _story(_budget_spent()[:2], [2]).note()
    assert "The values reported at steps 2 (global epochs) were undone" in note


def test_the_note_shows_the_effective_configuration_against_the_sampled() -> None:
    note = _story(_budget_spent()[:2]).note()
    assert "| `learning_rate` | 0.002 | 0.000666667 |" in note


def test_the_note_tells_each_event_in_words() -> None:
    note = _story(_budget_spent()[:2]).note()
    assert ("2. **recovered** `loss_increase` at epoch 2 (global 2), rolled back to epoch 1; "
            "learning_rate 0.002 -> 0.0006667: the validation loss rose") in note


def test_the_store_sits_beside_the_studys_artifacts_folder() -> None:
    assert store_dir(Path("studies/artifacts/arc")) == Path("studies/artifacts/optuna-artifacts")


def _running(tmp_path: Path) -> tuple[optuna.Study, optuna.Trial]:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    return study, trial


def test_publish_uploads_the_full_history_as_an_artifact(tmp_path: Path) -> None:
    study, trial = _running(tmp_path)
    story = _story(_budget_spent())
    publish(trial, story, tmp_path / "store")
    [meta] = get_all_artifact_meta(trial, storage=study._storage)
    download_artifact(artifact_store=FileSystemArtifactStore(str(tmp_path / "store")),
                      artifact_id=meta.artifact_id, file_path=str(tmp_path / "got.json"))
    assert json.loads((tmp_path / "got.json").read_text())["events"] == [
        e.to_dict() for e in story.events]


def test_publish_saves_the_note(tmp_path: Path) -> None:
    dashboard = pytest.importorskip("optuna_dashboard")
    study, trial = _running(tmp_path)
    story = _story(_budget_spent())
    publish(trial, story, tmp_path / "store")
    body = dashboard.get_note(trial)
    assert body == story.note("recovery-history-trial-0003.json")


def test_without_optuna_dashboard_the_note_is_skipped(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    study, trial = _running(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="autotune.search.dashboard"):
        publish(trial, _story(_budget_spent()), tmp_path / "store")
    assert "trial note skipped" in caplog.text


def test_without_optuna_dashboard_the_artifact_is_still_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    study, trial = _running(tmp_path)
    publish(trial, _story(_budget_spent()), tmp_path / "store")
    assert len(get_all_artifact_meta(trial, storage=study._storage)) == 1


def test_a_salvaged_trial_is_optunas_best_trial(tmp_path: Path) -> None:
    study, trial = _running(tmp_path)
    salvaged = _story(_budget_spent()[:2])
    record_story(trial, salvaged, {"stable": True}, tmp_path / "store")
    study.tell(trial, 0.5)
    assert study.best_trial.number == trial.number
