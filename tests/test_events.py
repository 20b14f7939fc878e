"""The event model and the timeline that survives rollbacks (autotune/events.py)."""

from __future__ import annotations

import json

import pytest

from autotune.events import (
    Event,
    EventKind,
    RunStatus,
    changes_of,
    count,
    describe_changes,
    fmt,
    surviving,
)


def test_kinds_and_statuses_are_the_contract_strings() -> None:
    assert [k.value for k in EventKind] == ["diverged", "recovered", "gave_up", "alarm",
                                            "resumed", "interrupted"]
    assert [s.value for s in RunStatus] == ["completed", "diverged", "gave_up"]
    assert EventKind.ALARM == "alarm"  # a str Enum: the JSON stays the same


def test_an_event_round_trips_through_json() -> None:
    event = Event(EventKind.RECOVERED, "loss_spike", epoch=3, global_epoch=5,
                  rolled_back_to=3, changes={"skip_batches": [[], [43, 44]]}, step=44,
                  actions=["skip_batches"], explanation="why", level=0)
    record = json.loads(json.dumps(event.to_dict()))
    assert record["kind"] == "recovered" and record["rolled_back_to"] == 3
    assert Event.from_dict(record) == event


def test_an_old_record_without_optional_fields_reads() -> None:
    event = Event.from_dict({"kind": "diverged", "reason": "nonfinite_loss", "epoch": 2})
    assert (event.global_epoch, event.rolled_back_to, event.changes) == (0, None, {})


def test_changes_and_counts_are_derived_from_the_events() -> None:
    events = [
        Event(EventKind.DIVERGED, "loss_increase", 2, 2),
        Event(EventKind.RECOVERED, "loss_increase", 1, 2, 1, {"learning_rate": [0.3, 0.1]}),
        Event(EventKind.RECOVERED, "loss_increase", 1, 4, 1,
              {"learning_rate": [0.1, 0.033], "warmup_epochs": [0.0, 2.0]}),
    ]
    assert changes_of(events) == {"learning_rate": [0.3, 0.033], "warmup_epochs": [0.0, 2.0]}
    assert changes_of([e.to_dict() for e in events]) == changes_of(events)
    assert (count(events, EventKind.DIVERGED), count(events, EventKind.RECOVERED)) == (1, 2)
    assert describe_changes(changes_of(events)) == \
        "learning_rate 0.3 -> 0.033, warmup_epochs 0 -> 2"
    assert describe_changes({}) == "none"


def test_batch_skips_count_the_recoveries_that_only_skipped_a_batch() -> None:
    from dataclasses import dataclass

    from autotune.events import EventCounts
    from autotune.recovery.ladders import Action

    @dataclass
    class Holder(EventCounts):
        events: list[Event]

    skip = Event(EventKind.RECOVERED, "nonfinite_loss", 1, 2, 1,
                 {"skip_batches": [[], [9]]}, actions=[Action.SKIP_BATCH.value])
    ladder = Event(EventKind.RECOVERED, "nonfinite_loss", 1, 3, 1,
                   {"learning_rate": [0.3, 0.1]}, actions=["lower_lr"])
    spike = Event(EventKind.RECOVERED, "loss_spike", 1, 4, 1,
                  {"skip_batches": [[9], [9, 12]], "grad_clip": [0.0, 1.0]},
                  actions=["skip_batches", "clip_on"])
    assert Holder([skip, ladder, spike]).batch_skips == 1
    assert Holder([Event.from_dict(skip.to_dict())]).batch_skips == 1  # read back
    assert Holder([ladder, spike]).batch_skips == 0


@pytest.mark.parametrize(("epochs", "kept"), [
    ([1, 2, 3], [1, 2, 3]),
    ([1, 2, 3, 2, 3, 4], [1, 2, 3, 4]),      # a rollback to epoch 1, then on
    ([1, 2, 1, 2, 1], [1]),                  # two rollbacks, the last to epoch 0
    ([], []),
])
def test_surviving_keeps_the_records_of_the_last_timeline(epochs: list[int],
                                                          kept: list[int]) -> None:
    records = [{"epoch": e, "global_epoch": i + 1} for i, e in enumerate(epochs)]
    out = surviving(records)
    assert [r["epoch"] for r in out] == kept
    assert [r["global_epoch"] for r in out] == sorted(r["global_epoch"] for r in out)


@pytest.mark.parametrize(("value", "shown"), [
    (0.001234567, "0.001235"), (float("nan"), "-"), (None, "-"), (True, "True"),
    (list(range(10)), "[10 steps]"), ("cosine", "cosine"),
])
def test_fmt(value: object, shown: str) -> None:
    assert fmt(value) == shown
