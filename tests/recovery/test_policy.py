"""The recovery policy: decide (autotune/recovery/policy.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from autotune.detect import Reason, Verdict
from autotune.events import Event, EventKind
from autotune.recovery.ladders import Action, RecoveryConfig
from autotune.recovery.policy import Decision, decide
from trainer.config import TrainConfig
from trainer.schedule import lr_at

SPE = 10  # optimizer steps per epoch


CHECKPOINTS = [1, 2, 3, 4, 5]


POLICY = RecoveryConfig()


BASE = TrainConfig(learning_rate=1e-3, warmup_epochs=1.0, epochs=10, grad_clip=1.0,
                   label_smoothing=0.0, use_augmentation=True, weight_decay=0.01)


def _epoch_verdict(reason: Reason = Reason.LOSS_INCREASE, epoch: int = 6) -> Verdict:
    return Verdict(True, reason, f"Trouble at epoch {epoch}.", epoch=epoch)


def _step_verdict(reason: Reason = Reason.LOSS_SPIKE, step: int = 45) -> Verdict:
    return Verdict(True, reason, f"Trouble at step {step}.", step=step)


def _decide(verdict: Verdict, config: TrainConfig = BASE,
            recoveries: Sequence[Decision | Mapping[str, Any]] = (),
            checkpoints: Sequence[int] = CHECKPOINTS, best: int | None = 3,
            policy: RecoveryConfig = POLICY) -> Decision:
    return decide(verdict, config, recoveries, checkpoints, best, SPE, policy)


def apply_changes(config: TrainConfig, decision: Decision) -> TrainConfig:
    """The configuration a run continues with after `decision` (the supervisor's effect)."""
    return config.replace(**{key: new for key, (_, new) in decision.changes.items()})


def _event(decision: Decision) -> dict[str, Any]:
    """The events.jsonl record the supervisor writes for `decision`."""
    kind = EventKind.GAVE_UP if decision.give_up else EventKind.RECOVERED
    return Event(kind, decision.reason.value, epoch=6, global_epoch=6,
                 **decision.event_fields()).to_dict()


def _run(verdicts: Sequence[Verdict], config: TrainConfig,
         policy: RecoveryConfig = POLICY) -> tuple[list[Decision], TrainConfig]:
    """Decide and apply verdict after verdict, as a run would."""
    decisions: list[Decision] = []
    for verdict in verdicts:
        decision = _decide(verdict, config, decisions, policy=policy)
        decisions.append(decision)
        config = apply_changes(config, decision)
    return decisions, config


def _collapse(epoch: int, learned: int) -> Verdict:
    return Verdict(True, Reason.COLLAPSED, f"Collapse at epoch {epoch}.",
                   {"since_epoch": float(epoch - 2), "last_learning_epoch": float(learned)},
                   epoch=epoch)


FIRST_ROWS: list[tuple[str, Verdict, dict[str, Any], tuple[Action, ...], dict[str, Any]]] = [
    ("nan loss with smoothing on", _step_verdict(Reason.NONFINITE_LOSS),
     {"label_smoothing": 0.1}, (Action.SMOOTHING_OFF,), {"label_smoothing": (0.1, 0.0)}),
    ("nan loss, smoothing off", _step_verdict(Reason.NONFINITE_LOSS), {},
     (Action.LOWER_LR,), {"learning_rate": (1e-3, 1e-3 / 3)}),
    ("nan grad", _step_verdict(Reason.NONFINITE_GRAD), {}, (Action.LOWER_LR,),
     {"learning_rate": (1e-3, 1e-3 / 3)}),
    ("loss increase with smoothing on", _epoch_verdict(), {"label_smoothing": 0.2},
     (Action.SMOOTHING_OFF,), {"label_smoothing": (0.2, 0.0)}),
    ("grad explosion", _step_verdict(Reason.GRAD_EXPLOSION), {}, (Action.LOWER_LR,),
     {"learning_rate": (1e-3, 1e-3 / 3)}),
    ("spike with clipping on", _step_verdict(step=45), {}, (Action.SKIP_BATCHES,),
     {"skip_batches": ([], [43, 44, 45, 46, 47])}),
    ("spike with clipping off", _step_verdict(step=45), {"grad_clip": 0.0},
     (Action.SKIP_BATCHES, Action.CLIP_ON),
     {"skip_batches": ([], [43, 44, 45, 46, 47]), "grad_clip": (0.0, 1.0)}),
    ("overfitting, augmentation off", _epoch_verdict(Reason.OVERFITTING),
     {"use_augmentation": False}, (Action.AUGMENTATION_ON,),
     {"use_augmentation": (False, True)}),
    ("overfitting, augmentation already on", _epoch_verdict(Reason.OVERFITTING), {},
     (Action.MORE_WEIGHT_DECAY,), {"weight_decay": (0.01, 0.02)}),
    ("collapse with clipping on: a third of the rate", _epoch_verdict(Reason.COLLAPSED),
     {"label_smoothing": 0.1}, (Action.LOWER_LR,), {"learning_rate": (1e-3, 1e-3 / 3)}),
    ("collapse with clipping off: clipping on too", _epoch_verdict(Reason.COLLAPSED),
     {"grad_clip": 0.0}, (Action.CLIP_ON, Action.LOWER_LR),
     {"grad_clip": (0.0, 1.0), "learning_rate": (1e-3, 1e-3 / 3)}),
]


@pytest.mark.parametrize("name, verdict, overrides, actions, changes", FIRST_ROWS,
                         ids=[row[0] for row in FIRST_ROWS])
def test_first_decision(name: str, verdict: Verdict, overrides: dict[str, Any],
                        actions: tuple[Action, ...], changes: dict[str, Any]) -> None:
    decision = _decide(verdict, BASE.replace(**overrides))
    assert not decision.give_up
    assert decision.reason is verdict.reason
    assert decision.actions == actions
    assert decision.changes.keys() == changes.keys()
    for key, (old, new) in changes.items():
        assert decision.changes[key] == (pytest.approx(old), pytest.approx(new))
    assert decision.explanation.startswith(verdict.message)
    assert f"Rolled back to epoch {decision.rollback_to}" in decision.explanation


def test_lower_lr_multiplies_by_a_third() -> None:
    decision = _decide(_epoch_verdict(), BASE.replace(learning_rate=0.003))
    assert decision.changes == {"learning_rate": (0.003, 0.003 * (1 / 3))}
    assert "0.003 -> 0.001" in decision.explanation


def test_instability_escalates_with_smoothing_on() -> None:
    config = BASE.replace(label_smoothing=0.1, grad_clip=0.0)
    verdicts = [_epoch_verdict()] * 4 + [_step_verdict(Reason.NONFINITE_LOSS)]
    decisions, final = _run(verdicts, config, RecoveryConfig(max_recoveries=5))
    assert [d.actions for d in decisions] == [
        (Action.SMOOTHING_OFF,), (Action.LOWER_LR,), (Action.LOWER_LR,),
        (Action.LONGER_WARMUP, Action.LOWER_LR), (Action.TIGHTER_CLIP, Action.LOWER_LR)]
    assert [d.level for d in decisions] == [0, 1, 2, 3, 4]
    assert final.learning_rate == pytest.approx(1e-3 / 81)
    assert final.grad_clip == 1.0  # off -> clip_default
    assert final.label_smoothing == 0.0


def test_instability_escalates_with_smoothing_off_and_reasons_share_the_ladder() -> None:
    verdicts = [_step_verdict(Reason.NONFINITE_LOSS), _epoch_verdict(Reason.LOSS_INCREASE),
                _step_verdict(Reason.GRAD_EXPLOSION), _step_verdict(Reason.NONFINITE_GRAD),
                _epoch_verdict()]
    policy = RecoveryConfig(max_recoveries=10)
    decisions, final = _run(verdicts, BASE, policy)
    assert [d.actions for d in decisions] == [
        (Action.LOWER_LR,), (Action.LOWER_LR,), (Action.LONGER_WARMUP, Action.LOWER_LR),
        (Action.TIGHTER_CLIP, Action.LOWER_LR), (Action.TIGHTER_CLIP, Action.LOWER_LR)]
    assert final.grad_clip == pytest.approx(0.25)  # the top rung repeats


def test_repeated_spikes_lower_the_learning_rate() -> None:
    decisions, final = _run([_step_verdict(step=45), _step_verdict(step=52),
                             _step_verdict(step=30)], BASE.replace(grad_clip=0.0))
    assert [d.actions for d in decisions] == [
        (Action.SKIP_BATCHES, Action.CLIP_ON), (Action.SKIP_BATCHES, Action.LOWER_LR),
        (Action.SKIP_BATCHES, Action.LOWER_LR, Action.TIGHTER_CLIP)]
    assert final.skip_batches == [28, 29, 30, 31, 32, 43, 44, 45, 46, 47, 50, 51, 52, 53, 54]
    assert final.grad_clip == 0.5


def test_spike_and_instability_escalate_separately() -> None:
    decisions, _ = _run([_step_verdict(step=45), _epoch_verdict()], BASE)
    assert decisions[1].actions == (Action.LOWER_LR,) and decisions[1].level == 1


def test_skip_batches_merges_sorted_and_clamps_at_zero() -> None:
    config = BASE.replace(skip_batches=[0, 1, 44, 90])
    decision = _decide(_step_verdict(step=45), config)
    assert decision.changes["skip_batches"] == ([0, 1, 44, 90], [0, 1, 43, 44, 45, 46, 47, 90])
    decision = _decide(_step_verdict(step=1), BASE)
    assert decision.changes["skip_batches"] == ([], [0, 1, 2, 3])


def test_budget_spent_gives_up() -> None:
    policy = RecoveryConfig(max_recoveries=2)
    decisions, config = _run([_epoch_verdict()] * 2, BASE, policy)
    decision = _decide(_epoch_verdict(), config, decisions, policy=policy)
    assert decision.give_up and decision.rollback_to is None and decision.changes == {}
    assert decision.reason is Reason.LOSS_INCREASE
    assert "recovery budget of 2 is spent" in decision.explanation
    assert apply_changes(config, decision) == config


def test_no_budget_gives_up_at_once() -> None:
    decision = _decide(_epoch_verdict(), policy=RecoveryConfig(max_recoveries=0))
    assert decision.give_up and "recovery is off" in decision.explanation


def test_nothing_left_to_change_gives_up() -> None:
    policy = RecoveryConfig(ladders={Reason.LOSS_INCREASE: (Action.SMOOTHING_OFF,)})
    decision = _decide(_epoch_verdict(), BASE, policy=policy)
    assert decision.give_up and "nothing" in decision.explanation


def test_noop_actions_are_skipped() -> None:
    # Smoothing already off: the first rung is passed over.
    assert _decide(_epoch_verdict()).level == 1
    # Clipping already on: CLIP_ON is dropped from the spike rung.
    assert _decide(_step_verdict()).actions == (Action.SKIP_BATCHES,)
    # Augmentation already on: the overfitting ladder goes to weight decay.
    assert _decide(_epoch_verdict(Reason.OVERFITTING)).actions == (Action.MORE_WEIGHT_DECAY,)
    # Weight decay off: MORE_WEIGHT_DECAY switches it on at the default.
    decision = _decide(_epoch_verdict(Reason.OVERFITTING), BASE.replace(weight_decay=0.0))
    assert decision.changes == {"weight_decay": (0.0, 0.01)}
    # A spike verdict with no step has no batches to skip.
    decision = _decide(_epoch_verdict(Reason.LOSS_SPIKE), BASE.replace(grad_clip=0.0))
    assert decision.actions == (Action.CLIP_ON,)


def test_augmentation_is_the_suspect_after_it_was_switched_on() -> None:
    config = BASE.replace(use_augmentation=False)
    decisions, config = _run([_epoch_verdict(Reason.OVERFITTING),
                              _step_verdict(Reason.NONFINITE_LOSS)], config)
    assert decisions[1].actions == (Action.AUGMENTATION_OFF,)
    assert decisions[1].level is None
    assert "right after" in decisions[1].explanation
    assert config.use_augmentation is False
    # The next instability climbs the ladder from its start; overfitting does not switch
    # augmentation on again.
    later = _decide(_epoch_verdict(), config, decisions)
    assert later.actions == (Action.LOWER_LR,) and later.level == 1
    overfit = _decide(_epoch_verdict(Reason.OVERFITTING), config, decisions)
    assert overfit.actions == (Action.MORE_WEIGHT_DECAY,)


ROLLBACK_ROWS: list[tuple[str, Verdict, list[int], int | None, str, int]] = [
    ("best", _epoch_verdict(epoch=6), CHECKPOINTS, 3, "best", 3),
    ("before trouble", _epoch_verdict(epoch=6), CHECKPOINTS, 3, "before_trouble", 5),
    ("best is not on disk", _epoch_verdict(epoch=6), [4, 5], 3, "best", 5),
    ("no best yet", _epoch_verdict(epoch=6), CHECKPOINTS, None, "best", 5),
    ("never past the trouble: epoch", _epoch_verdict(epoch=4), CHECKPOINTS, None, "best", 3),
    ("never past the trouble: best is later", _epoch_verdict(epoch=4), CHECKPOINTS, 5,
     "best", 3),
    ("the trouble's own epoch holds bad weights", _epoch_verdict(epoch=5), CHECKPOINTS, 5,
     "best", 4),
    ("step in epoch index 4: checkpoint 4 was saved before it", _step_verdict(step=45),
     CHECKPOINTS, None, "before_trouble", 4),
    ("step on an epoch boundary", _step_verdict(step=40), CHECKPOINTS, None, "best", 4),
    ("gap in the checkpoints", _step_verdict(step=45), [1, 2], None, "best", 2),
    ("epoch 0 when nothing else", _step_verdict(step=5), CHECKPOINTS, None, "best", 0),
    ("epoch 0 with no checkpoints", _epoch_verdict(epoch=3), [], 2, "best", 0),
    ("overfitting goes to best whatever the rule", _epoch_verdict(Reason.OVERFITTING),
     CHECKPOINTS, 3, "before_trouble", 3),
    ("no step or epoch: the latest", Verdict(True, Reason.LOSS_INCREASE), CHECKPOINTS, None,
     "best", 5),
    ("collapse that never learned: the initial weights", _collapse(6, 0), CHECKPOINTS, 5,
     "best", 0),
    ("collapse after learning: the best while it learned", _collapse(6, 3), CHECKPOINTS, 2,
     "best", 2),
    ("collapse after learning: never a collapsed checkpoint", _collapse(6, 3), CHECKPOINTS, 5,
     "best", 3),
]


@pytest.mark.parametrize("name, verdict, checkpoints, best, rule, expected", ROLLBACK_ROWS,
                         ids=[row[0] for row in ROLLBACK_ROWS])
def test_rollback_target(name: str, verdict: Verdict, checkpoints: list[int],
                         best: int | None, rule: str, expected: int) -> None:
    policy = RecoveryConfig(rollback=rule)
    decision = _decide(verdict, BASE.replace(use_augmentation=False), (), checkpoints, best,
                       policy)
    assert decision.rollback_to == expected


def test_decide_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="diverged"):
        _decide(Verdict(False))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        decide(_epoch_verdict(), BASE, [], CHECKPOINTS, 3, 0, POLICY)


def test_longer_warmup_formula() -> None:
    policy = RecoveryConfig(ladders={Reason.LOSS_INCREASE: (Action.LONGER_WARMUP,)})
    # max(2 * old, rollback + 1)
    assert _decide(_epoch_verdict(), BASE, best=3, policy=policy).changes == {
        "warmup_epochs": (1.0, 4.0)}
    assert _decide(_epoch_verdict(), BASE.replace(warmup_epochs=3.0), best=3,
                   policy=policy).changes == {"warmup_epochs": (3.0, 6.0)}
    assert _decide(_epoch_verdict(), BASE.replace(warmup_epochs=0.0), best=None,
                   checkpoints=[], policy=policy).changes == {"warmup_epochs": (0.0, 1.0)}
    # Capped at the planned epochs, so the learning rate still decays.
    assert _decide(_epoch_verdict(), BASE.replace(warmup_epochs=4.0), best=3,
                   policy=policy).changes == {"warmup_epochs": (4.0, 8.0)}
    assert _decide(_epoch_verdict(), BASE.replace(warmup_epochs=6.0), best=3,
                   policy=policy).changes == {"warmup_epochs": (6.0, 10.0)}


def test_apply_changes_gives_the_new_schedule_after_the_rollback() -> None:
    decisions, config = _run([_epoch_verdict()] * 3, BASE)
    last = decisions[-1]
    assert last.actions == (Action.LONGER_WARMUP, Action.LOWER_LR)
    assert last.rollback_to == 3
    assert config.warmup_epochs == 4.0
    assert config.learning_rate == pytest.approx(1e-3 / 27)
    start = last.rollback_to * SPE
    lrs = [lr_at(step, config, SPE) for step in range(start, config.epochs * SPE)]
    # The learning rate ramps up again from the rollback point to the new peak, then decays.
    warm_end = int(config.warmup_epochs * SPE) - 1
    assert lrs[0] == pytest.approx(config.learning_rate * (start + 1) / (4.0 * SPE))
    assert lrs[0] < config.learning_rate
    assert lrs[warm_end - start] == pytest.approx(config.learning_rate)
    assert all(b > a for a, b in zip(lrs[:warm_end - start], lrs[1:warm_end - start + 1]))
    assert lrs[-1] == pytest.approx(config.learning_rate * config.min_lr_ratio)
    assert max(lrs) <= config.learning_rate * (1 + 1e-12)


def test_event_round_trip() -> None:
    decisions, _ = _run([_step_verdict(step=45), _epoch_verdict(Reason.OVERFITTING)],
                        BASE.replace(grad_clip=0.0, use_augmentation=False))
    for decision in decisions:
        event = json.loads(json.dumps(_event(decision), allow_nan=False))
        assert event["kind"] == "recovered"
        assert Event.from_dict(event).to_dict() == _event(decision)
    event = _event(decisions[0])
    assert event["reason"] == "loss_spike"
    assert event["rolled_back_to"] == 3
    assert event["changes"] == {"skip_batches": [[], [43, 44, 45, 46, 47]],
                                "grad_clip": [0.0, 1.0]}
    assert event["actions"] == ["skip_batches", "clip_on"]
    give_up = _decide(_epoch_verdict(), policy=RecoveryConfig(max_recoveries=0))
    event = json.loads(json.dumps(_event(give_up)))
    assert event["kind"] == "gave_up" and event["rolled_back_to"] is None
    assert Event.from_dict(event).to_dict() == _event(give_up)


def test_recoveries_from_events_count_like_decisions() -> None:
    config = BASE.replace(label_smoothing=0.1)
    decisions, config = _run([_epoch_verdict()] * 2, config)
    events: list[dict[str, Any]] = []
    for d in decisions:
        events.append({"kind": "diverged", "reason": d.reason.value, "epoch": 6})
        events.append(json.loads(json.dumps(_event(d))))
    from_events = _decide(_epoch_verdict(), config, events)
    assert from_events == _decide(_epoch_verdict(), config, decisions)
    assert from_events.level == 2
    # Records without a level (another writer) count as one rung each.
    bare = [{k: v for k, v in e.items() if k != "level"} for e in events]
    assert _decide(_epoch_verdict(), config, bare).level == 2
    # The budget counts recoveries only, not diverged events.
    assert not _decide(_epoch_verdict(), config, events,
                       policy=RecoveryConfig(max_recoveries=3)).give_up
    assert _decide(_epoch_verdict(), config, events,
                   policy=RecoveryConfig(max_recoveries=2)).give_up


def test_collapse_escalates_with_a_tenth_then_a_longer_warmup() -> None:
    decisions, config = _run([_collapse(3, 0)] * 4, BASE.replace(
        learning_rate=0.27, warmup_epochs=0.0, grad_clip=0.0))
    assert [d.actions for d in decisions] == [
        (Action.CLIP_ON, Action.LOWER_LR), (Action.CUT_LR,),
        (Action.LOWER_LR, Action.LONGER_WARMUP),
        (Action.LOWER_LR, Action.LONGER_WARMUP)]  # past the top the last rung repeats
    assert config.learning_rate == pytest.approx(0.27 / 3 / 10 / 9)
    assert config.grad_clip == 1.0
    assert config.warmup_epochs == 2.0  # 0 -> 1 (ramp up again from the start) -> 2
    assert "switched gradient clipping on at 1" in decisions[0].explanation
    assert "lowered the learning rate 0.27 -> 0.09" in decisions[0].explanation
    assert "cut the learning rate 0.09 -> 0.009" in decisions[1].explanation
    assert "Rolled back to epoch 0 (the initial weights)" in decisions[0].explanation


def test_a_ladder_of_ones_own_for_a_collapse() -> None:
    policy = RecoveryConfig(ladders={Reason.COLLAPSED: ["cut_lr"]}, cut_lr_factor=0.2)
    decision = _decide(_collapse(3, 0), BASE.replace(learning_rate=0.3), policy=policy)
    assert decision.actions == (Action.CUT_LR,)
    assert decision.changes == {"learning_rate": (0.3, pytest.approx(0.06))}


def _sudden_nan(step: int = 45, sudden: bool = True) -> Verdict:
    return Verdict(True, Reason.NONFINITE_LOSS, f"NaN at step {step}.",
                   {"loss": float("nan"), "sudden": float(sudden)}, step=step)


def test_a_first_sudden_nan_blames_the_batch() -> None:
    decision = _decide(_sudden_nan(), BASE.replace(label_smoothing=0.1), best=3)
    assert decision.actions == (Action.SKIP_BATCH,) and decision.level is None
    assert decision.changes == {"skip_batches": ([], [45])}
    # The weights were healthy right up to the step: the last checkpoint before it, not the
    # best one, and no hyperparameter changes.
    assert decision.rollback_to == 4
    assert "step 45" in decision.explanation and "batch" in decision.explanation


def test_a_second_nan_or_one_after_a_climb_is_the_configuration() -> None:
    config = BASE.replace(label_smoothing=0.1)
    decisions, config = _run([_sudden_nan(45), _sudden_nan(77)], config)
    assert decisions[0].actions == (Action.SKIP_BATCH,)
    assert decisions[1].actions == (Action.SMOOTHING_OFF,) and decisions[1].level == 0
    assert config.skip_batches == [45]
    # Not sudden (a climb before it): the ladder at once.
    climb = _decide(_sudden_nan(sudden=False), BASE.replace(label_smoothing=0.1))
    assert climb.actions == (Action.SMOOTHING_OFF,)
    # Switched off, or a trainer with no batches to skip: the ladder too.
    off = _decide(_sudden_nan(), BASE.replace(label_smoothing=0.1),
                  policy=RecoveryConfig(suspect_batch=False))
    assert off.actions == (Action.SMOOTHING_OFF,)
    foreign = decide(_sudden_nan(), {"learning_rate": 0.1, "label_smoothing": 0.1}, [],
                     CHECKPOINTS, 3, SPE, POLICY)
    assert foreign.actions == (Action.SMOOTHING_OFF,)
    # Read back from events.jsonl, the skip still counts as the run's first NaN recovery.
    again = _decide(_sudden_nan(90), config.replace(skip_batches=[45]),
                    [_event(decisions[0])])
    assert again.actions != (Action.SKIP_BATCH,)
