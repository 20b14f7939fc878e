"""The recovery policy: given a verdict and the run's history, give up or say how to resume.

`decide` is pure: it reads the verdict, the hyperparameters in force, the recoveries made
so far and the checkpoints on disk, and returns a Decision (a rollback target and a few
changes, with a sentence for the user). Loading the checkpoint, applying the changes and
writing events is the supervisor's business. The ladders it climbs are data
(`autotune.recovery.ladders`).

Two rules sit before the ladders. When an instability verdict comes right after a recovery
that switched augmentation on, augmentation is the suspect, and it is switched off again
(without climbing the ladder); the overfitting ladder then does not switch it on again.
When a run's first non-finite loss or gradient comes out of a healthy stretch (the step
detector's `sudden` evidence: no spike, no explosion just before), the batch is the
suspect: the run goes back to the last checkpoint before it and skips that one batch, with
every hyperparameter as it was; a second non-finite value climbs the instability ladder.
A hyperparameter the trainer does not have is never changed: its actions are dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from autotune.detect import Reason, Verdict
from autotune.recovery.ladders import (
    INSTABILITY_REASONS,
    NONFINITE_REASONS,
    Action,
    Ladder,
    RecoveryConfig,
    Rung,
)

__all__ = ["Decision", "decide"]

WEIGHT_DECAY_CAP = 10.0
"""MORE_WEIGHT_DECAY never goes above this (TrainConfig's own upper bound)."""


@dataclass(frozen=True)
class Decision:
    """What to do about a divergence: give up, or roll back and change these keys."""

    give_up: bool
    reason: Reason
    rollback_to: int | None = None
    """Logical epoch of the checkpoint to load (0 = the initial weights); None on give-up."""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict, hash=False)
    """Hyperparameter -> (old, new), JSON-able values."""
    actions: tuple[Action, ...] = ()
    explanation: str = ""
    """One or two sentences for the user: what was seen and why this change."""
    level: int | None = None
    """The ladder rung used (None: not a ladder step, e.g. give-up or a suspect rule)."""

    def event_fields(self) -> dict[str, Any]:
        """The `autotune.events.Event` fields of this decision besides kind, reason and
        the epochs."""
        return {
            "rolled_back_to": self.rollback_to,
            "changes": {k: [old, new] for k, (old, new) in self.changes.items()},
            "actions": [a.value for a in self.actions],
            "explanation": self.explanation,
            "level": self.level,
        }


# -- decide -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Past:
    """A recovery already made, from a Decision or an events.jsonl record."""

    reason: Reason
    actions: tuple[Action, ...]
    level: int | None  # -1: a ladder step whose rung was not recorded


def _past(recoveries: Sequence[Decision | Mapping[str, Any]]) -> list[_Past]:
    out: list[_Past] = []
    for item in recoveries:
        if isinstance(item, Decision):
            if not item.give_up:
                out.append(_Past(item.reason, item.actions, item.level))
            continue
        if item.get("kind", "recovered") != "recovered":  # diverged / gave_up events
            continue
        actions = tuple(Action(a) for a in item.get("actions") or ())
        level = item["level"] if "level" in item else (
            None if actions == (Action.AUGMENTATION_OFF,) else -1)
        out.append(_Past(Reason(item["reason"]), actions, level))
    return out


def decide(verdict: Verdict, config: Mapping[str, Any] | Any,
           recoveries: Sequence[Decision | Mapping[str, Any]],
           checkpoint_epochs: Sequence[int], best_epoch: int | None, steps_per_epoch: int,
           cfg: RecoveryConfig, *, planned_epochs: int | None = None) -> Decision:
    """Give up, or choose the rollback target and the changes for a diverged verdict.

    Args:
        verdict: a diverged verdict (its step or epoch locates the trouble).
        config: the hyperparameters in force: a mapping (a trainer's `hparams`) or an
            object with `to_dict()` (a TrainConfig). Keys it lacks are never changed.
        recoveries: the recoveries made so far in this run, as Decisions or as events.jsonl
            records (records of kind `diverged` or `gave_up` are ignored).
        checkpoint_epochs: logical epochs whose checkpoints are on disk (0 always counts).
        best_epoch: the epoch with the lowest validation loss so far, if any.
        steps_per_epoch: optimizer steps per epoch, to place a step-level verdict.
        cfg: the policy.
        planned_epochs: the run's planned epochs (a longer warmup stops there); default
            the configuration's `epochs`, else no limit.
    """
    if not verdict.diverged or verdict.reason is None:
        raise ValueError(f"decide needs a diverged verdict with a reason but got {verdict}.")
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be positive but got {steps_per_epoch}.")
    reason = verdict.reason
    seen = verdict.message or f"{reason.message[0].upper()}{reason.message[1:]}."
    past = _past(recoveries)
    if len(past) >= cfg.max_recoveries:
        why = ("recovery is off (a budget of 0 recoveries)" if cfg.max_recoveries == 0
               else f"the recovery budget of {cfg.max_recoveries} is spent")
        return Decision(True, reason, explanation=f"{seen} Giving up: {why}.")

    target, where = _rollback_target(verdict, checkpoint_epochs, best_epoch,
                                     steps_per_epoch, cfg)
    values = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    if planned_epochs is None:
        planned_epochs = values.get("epochs")
    ctx = _Changes(values, cfg, verdict, target, past,
                   math.inf if planned_epochs is None else float(planned_epochs))
    if (cfg.suspect_augmentation and reason in INSTABILITY_REASONS and past
            and Action.AUGMENTATION_ON in past[-1].actions
            and values.get("use_augmentation")):
        changes, actions = ctx.apply((Action.AUGMENTATION_OFF,))
        return Decision(False, reason, target, changes, actions,
                        _explain(seen, target, where, actions, changes, ctx), level=None)

    if _batch_suspect(verdict, values, past, cfg):
        # The weights were fine up to the step: the last checkpoint before it, not the best.
        last, named = _rollback_target(verdict, checkpoint_epochs, best_epoch,
                                       steps_per_epoch, replace(cfg, rollback="before_trouble"))
        changes, actions = ctx.apply((Action.SKIP_BATCH,))
        if changes:
            return Decision(False, reason, last, changes, actions,
                            _explain(seen, last, named, actions, changes, ctx), level=None)

    ladder = cfg.ladders[reason]
    start = min(_next_level(ladder, past, cfg), len(ladder) - 1)
    for level in range(start, len(ladder)):
        changes, actions = ctx.apply(ladder[level])
        if changes:
            return Decision(False, reason, target, changes, actions,
                            _explain(seen, target, where, actions, changes, ctx), level)
    return Decision(True, reason, explanation=(
        f"{seen} Giving up: every change left on the {reason.value} ladder has been made or "
        f"would change nothing."))


def _batch_suspect(verdict: Verdict, values: Mapping[str, Any], past: list[_Past],
                   cfg: RecoveryConfig) -> bool:
    """A run's first non-finite value, out of a healthy stretch, on a trainer that can skip
    a batch: most likely the batch (or a fluke), not the configuration."""
    return (cfg.suspect_batch and verdict.reason in NONFINITE_REASONS
            and bool(verdict.evidence.get("sudden")) and verdict.step is not None
            and "skip_batches" in values
            and not any(rec.reason in NONFINITE_REASONS for rec in past))


def _next_level(ladder: Ladder, past: list[_Past], cfg: RecoveryConfig) -> int:
    """The rung after the last one used by recoveries whose reasons share this ladder."""
    level = 0
    for rec in past:
        if rec.level is None or cfg.ladders[rec.reason] != ladder:
            continue
        level = level + 1 if rec.level < 0 else max(level, rec.level + 1)
    return level


def _rollback_target(verdict: Verdict, checkpoint_epochs: Sequence[int],
                     best_epoch: int | None, steps_per_epoch: int,
                     cfg: RecoveryConfig) -> tuple[int, str]:
    """The checkpoint to load and how to name it; never one saved after the trouble began.

    The trouble began in logical epoch `verdict.epoch` (its checkpoint holds the bad
    weights), or, for a step verdict, in the epoch that holds the step, so every checkpoint
    up to `step // steps_per_epoch` was saved before it. A collapse names the last epoch
    whose weights had still learned something (`last_learning_epoch`, 0 = none did).
    """
    limit: float
    if verdict.epoch is not None:
        limit = verdict.epoch - 1
    elif verdict.step is not None:
        limit = verdict.step // steps_per_epoch
    else:
        limit = math.inf
    learned = verdict.evidence.get("last_learning_epoch")
    if learned is not None and math.isfinite(learned):
        limit = min(limit, int(learned))
    available = {e for e in checkpoint_epochs if 0 <= e <= limit} | {0}
    prefer_best = cfg.rollback == "best" or verdict.reason is Reason.OVERFITTING
    if prefer_best and best_epoch is not None and best_epoch in available:
        return best_epoch, "the best checkpoint"
    target = max(available)
    if target == 0:
        return 0, "the initial weights"
    return target, "the last checkpoint before the trouble"


class _Changes:
    """Works out each action's new value from the hyperparameters in force."""

    def __init__(self, config: Mapping[str, Any], cfg: RecoveryConfig, verdict: Verdict,
                 target: int, past: list[_Past], planned_epochs: float) -> None:
        self.config, self.cfg, self.verdict, self.target = config, cfg, verdict, target
        self.planned_epochs = planned_epochs
        self.aug_blamed = any(Action.AUGMENTATION_OFF in rec.actions for rec in past)

    def apply(self, rung: Rung) -> tuple[dict[str, tuple[Any, Any]], tuple[Action, ...]]:
        """The changes of a rung's actions, dropping those that would change nothing."""
        values: dict[str, Any] = {}
        old: dict[str, Any] = {}
        taken: list[Action] = []
        for action in rung:
            if _KEY[action] not in self.config:
                continue  # the trainer has no such hyperparameter: never changed
            key, new = self._change(action, values)
            current = values.get(key, self.config[key])
            if new == current:
                continue
            old.setdefault(key, self.config[key])
            values[key] = new
            taken.append(action)
        changes = {k: (old[k], v) for k, v in values.items() if v != old[k]}
        return changes, tuple(taken)

    def _change(self, action: Action, values: Mapping[str, Any]) -> tuple[str, Any]:
        def now(key: str) -> Any:
            return values.get(key, self.config[key])

        cfg = self.cfg
        if action is Action.LOWER_LR:
            return "learning_rate", now("learning_rate") * cfg.lr_factor
        if action is Action.CUT_LR:
            return "learning_rate", now("learning_rate") * cfg.cut_lr_factor
        if action is Action.SMOOTHING_OFF:
            return "label_smoothing", 0.0
        if action is Action.AUGMENTATION_ON:
            # Not back on once an earlier recovery blamed it for instability.
            return "use_augmentation", True if not self.aug_blamed else now("use_augmentation")
        if action is Action.AUGMENTATION_OFF:
            return "use_augmentation", False
        if action is Action.LONGER_WARMUP:
            # Ramp up again from the rollback point; a warmup past the planned end would
            # leave the learning rate rising to the last step, so it stops there.
            old = now("warmup_epochs")
            longer = max(2.0 * old, self.target + 1.0)
            return "warmup_epochs", max(old, min(longer, self.planned_epochs))
        if action is Action.TIGHTER_CLIP:
            clip = now("grad_clip")
            return "grad_clip", cfg.clip_default if clip <= 0 else clip * cfg.clip_factor
        if action is Action.CLIP_ON:
            clip = now("grad_clip")
            return "grad_clip", cfg.clip_default if clip <= 0 else clip
        if action is Action.MORE_WEIGHT_DECAY:
            wd = now("weight_decay")
            new = cfg.wd_default if wd <= 0 else wd * cfg.wd_factor
            return "weight_decay", min(new, WEIGHT_DECAY_CAP)
        if action in (Action.SKIP_BATCH, Action.SKIP_BATCHES):
            skip = list(now("skip_batches"))
            step = self.verdict.step
            if step is None:
                return "skip_batches", skip
            radius = 0 if action is Action.SKIP_BATCH else cfg.skip_radius
            return "skip_batches", sorted({*skip, *range(max(0, step - radius),
                                                         step + radius + 1)})
        raise ValueError(f"unknown action {action!r}.")


_WHY: Mapping[Action, str] = {
    Action.LOWER_LR: "lowered the learning rate {old:.3g} -> {new:.3g}, so each step moves "
                     "the weights less",
    Action.CUT_LR: "cut the learning rate {old:.3g} -> {new:.3g}, since a model that settled "
                   "on the colour frequencies at a rate stays there",
    Action.SMOOTHING_OFF: "switched label smoothing off ({old:g} -> 0), since smoothing "
                          "before the model has learned raises the loss floor and pushes "
                          "the logits",
    Action.AUGMENTATION_ON: "switched augmentation on, the strongest regulariser for ARC's "
                            "few pairs per task",
    Action.AUGMENTATION_OFF: "switched augmentation off again, since the trouble began right "
                             "after an earlier recovery switched it on",
    Action.LONGER_WARMUP: "lengthened warmup {old:g} -> {new:g} epochs, so the learning rate "
                          "ramps up again from the rollback point",
    Action.TIGHTER_CLIP: "tightened gradient clipping {old:g} -> {new:g}",
    Action.CLIP_ON: "switched gradient clipping on at {new:g}, so one bad batch cannot throw "
                    "the weights far",
    Action.MORE_WEIGHT_DECAY: "raised weight decay {old:g} -> {new:g} to regularise",
    Action.SKIP_BATCHES: "will skip the batches of steps {first}-{last} around the spike, as "
                         "PaLM does",
    Action.SKIP_BATCH: "will skip the batch of step {step}, with every hyperparameter as it "
                       "was: the loss and gradient norm were steady right up to it, so the "
                       "batch is the likely cause, not the configuration",
}
_KEY: Mapping[Action, str] = {
    Action.LOWER_LR: "learning_rate", Action.CUT_LR: "learning_rate",
    Action.SMOOTHING_OFF: "label_smoothing",
    Action.AUGMENTATION_ON: "use_augmentation", Action.AUGMENTATION_OFF: "use_augmentation",
    Action.LONGER_WARMUP: "warmup_epochs", Action.TIGHTER_CLIP: "grad_clip",
    Action.CLIP_ON: "grad_clip", Action.MORE_WEIGHT_DECAY: "weight_decay",
    Action.SKIP_BATCHES: "skip_batches", Action.SKIP_BATCH: "skip_batches",
}


def _explain(seen: str, target: int, where: str, actions: tuple[Action, ...],
             changes: Mapping[str, tuple[Any, Any]], ctx: _Changes) -> str:
    phrases = []
    for action in actions:
        old, new = changes[_KEY[action]]
        step, radius = ctx.verdict.step or 0, ctx.cfg.skip_radius
        phrases.append(_WHY[action].format(old=old, new=new, first=max(0, step - radius),
                                           last=step + radius, step=step))
    return f"{seen} Rolled back to epoch {target} ({where}) and {'; '.join(phrases)}."
