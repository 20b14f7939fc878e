"""The study as optuna-dashboard serves it: a recovered trial's note, artifact and attributes
come through its JSON API intact (autotune/search/dashboard.py, objective.record_story)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from autotune.events import Event, EventKind
from autotune.search.dashboard import TrialStory, store_dir
from autotune.search.objective import record_story
from autotune.search.vocabulary import TrialAttr

dashboard = pytest.importorskip("optuna_dashboard")

EVENTS = [
    Event(EventKind.DIVERGED, "nonfinite_loss", 2, 2, step=10, message="loss is nan at step 10",
          evidence={"loss": "nan", "step": 10}),
    Event(EventKind.RECOVERED, "nonfinite_loss", 2, 2, rolled_back_to=1,
          changes={"learning_rate": [2e-3, 6.6e-4]}, actions=["rollback", "lower_lr"], level=1,
          explanation="a NaN loss: rolled back to epoch 1 and cut the learning rate"),
]
TIMEOUT_S = 5.0


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass


def _study(tmp_path: Path) -> tuple[str, Path, TrialStory]:
    """A study of two trials, as the objective records them: a clean one and one that
    diverged at epoch 2 (reported at global epoch 2), was rolled back to epoch 1 with a
    lower learning rate and ended stable and best."""
    url = f"sqlite:///{tmp_path / 'autotune.db'}"
    artifacts = tmp_path / "studies" / "artifacts" / "arc"
    study = optuna.create_study(study_name="arc", storage=url)
    clean = study.ask()
    clean.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    clean.report(1.9, 1)
    record_story(clean, TrialStory(0, "completed", True, dict(clean.params), {}), {
        "stable": True}, store_dir(artifacts))
    study.tell(clean, 1.9)
    study.enqueue_trial({"learning_rate": 2e-3})
    trial = study.ask()
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    for step, value in ((1, 1.9), (2, 2.6), (3, 1.7)):
        trial.report(value, step)
    trial.set_user_attr(TrialAttr.TIMELINE, [[1, 1], [3, 2]])
    story = TrialStory(trial.number, "completed", True, dict(trial.params),
                       {"learning_rate": 6.6e-4, "label_smoothing": 0.0, "epochs": 2},
                       events=EVENTS, rolled_back=[2], timeline=[[1, 1], [3, 2]])
    record_story(trial, story, {"stable": True, "best_epoch": 2}, store_dir(artifacts))
    study.tell(trial, 1.7)
    return url, store_dir(artifacts), story


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TrialStory]]:
    """optuna-dashboard's app on 127.0.0.1 (a free port) in a thread, stopped at the end."""
    url, store, story = _study(tmp_path_factory.mktemp("served"))
    app = dashboard.wsgi(url, artifact_store=FileSystemArtifactStore(str(store)))
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", story
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT_S)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return response.read()


def _recovered(base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The study detail and the recovered trial (number 1) from the JSON API."""
    [summary] = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
    detail = json.loads(_get(f"{base}/api/studies/{summary['study_id']}"))
    return detail, next(t for t in detail["trials"] if t["number"] == 1)


def test_the_served_note_is_the_trials_note(served: tuple[str, TrialStory]) -> None:
    base, story = served
    started = time.monotonic()
    _, trial = _recovered(base)
    assert trial["note"]["body"] == story.note("recovery-history-trial-0001.json")
    assert time.monotonic() - started < TIMEOUT_S


def test_the_served_artifact_is_the_full_history(served: tuple[str, TrialStory]) -> None:
    base, story = served
    detail, trial = _recovered(base)
    [artifact] = trial["artifacts"]
    body = _get(f"{base}/artifacts/{trial['study_id']}/{trial['trial_id']}/"
                f"{artifact['artifact_id']}")
    assert json.loads(body) == story.history()


def test_the_served_attributes_are_whole_json(served: tuple[str, TrialStory]) -> None:
    base, story = served
    _, trial = _recovered(base)
    shown = {a["key"]: a["value"] for a in trial["user_attrs"]}
    expected = {**story.attrs(), "stable": True, "best_epoch": 2,
                TrialAttr.TIMELINE: [[1, 1], [3, 2]]}
    assert shown == {k: _as_shown(v) for k, v in expected.items()}  # none cut


def _as_shown(value: Any) -> str:
    """An attribute as optuna-dashboard shows it uncut: strings as they are, numbers and
    booleans by `str`, anything else as its whole JSON."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, (bool, int, float)) else json.dumps(value)


def test_the_best_trial_card_shows_the_salvaged_trial(served: tuple[str, TrialStory]) -> None:
    base, _ = served
    detail, _ = _recovered(base)
    assert [t["number"] for t in detail["best_trials"]] == [1]
