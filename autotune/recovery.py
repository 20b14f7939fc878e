"""The recovery policy: given a verdict and the run's history, give up or say how to resume.

`decide` is pure: it reads the verdict, the configuration in force, the recoveries made so
far and the checkpoints on disk, and returns a Decision (a rollback target and a few
configuration changes, with a sentence for the user). `apply_changes` turns a Decision into
the next TrainConfig. Loading the checkpoint and writing events is the caller's business.

Ladders. Each Reason has a ladder of rungs; a rung is the set of actions taken together.
Reasons that share a ladder (by default the four instability reasons) escalate together:
the n-th recovery for them starts at the rung after the last one used. A rung whose actions
would all change nothing (smoothing already off, augmentation already on) is passed over,
and a no-op action inside a rung is dropped. Past the top, the last rung repeats (it lowers
the learning rate again) until the budget is spent.

One rule sits before the ladders: when an instability verdict comes right after a recovery
that switched augmentation on, augmentation is the suspect, and it is switched off again
(without climbing the ladder); the overfitting ladder then does not switch it on again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from types import MappingProxyType
from typing import Any

from autotune.divergence import Reason, Verdict
from trainer.config import TrainConfig

__all__ = [
    "DEFAULT_LADDERS",
    "ROLLBACKS",
    "Action",
    "Decision",
    "RecoveryConfig",
    "apply_changes",
    "decide",
    "recovery_config",
]


class Action(str, Enum):
    """One configuration change a recovery can make."""

    LOWER_LR = "lower_lr"
    CUT_LR = "cut_lr"
    SMOOTHING_OFF = "smoothing_off"
    AUGMENTATION_ON = "augmentation_on"
    AUGMENTATION_OFF = "augmentation_off"
    LONGER_WARMUP = "longer_warmup"
    TIGHTER_CLIP = "tighter_clip"
    CLIP_ON = "clip_on"
    MORE_WEIGHT_DECAY = "more_weight_decay"
    SKIP_BATCHES = "skip_batches"


Rung = tuple[Action, ...]
Ladder = tuple[Rung, ...]

_INSTABILITY: Ladder = (
    # Smoothing on before the model has learned raises the loss floor and pushes logits.
    (Action.SMOOTHING_OFF,),
    (Action.LOWER_LR,),
    (Action.LOWER_LR,),
    (Action.LONGER_WARMUP, Action.LOWER_LR),
    (Action.TIGHTER_CLIP, Action.LOWER_LR),
)
DEFAULT_LADDERS: Mapping[Reason, Ladder] = MappingProxyType({
    Reason.NONFINITE_LOSS: _INSTABILITY,
    Reason.NONFINITE_GRAD: _INSTABILITY,
    Reason.LOSS_INCREASE: _INSTABILITY,
    Reason.GRAD_EXPLOSION: _INSTABILITY,
    # PaLM's remedy for a spike: restart before it and skip the batches around it.
    Reason.LOSS_SPIKE: (
        (Action.SKIP_BATCHES, Action.CLIP_ON),
        (Action.SKIP_BATCHES, Action.LOWER_LR),
        (Action.SKIP_BATCHES, Action.LOWER_LR, Action.TIGHTER_CLIP),
    ),
    # Stuck at the colour frequencies: restart from the last weights that still learned with
    # a third of the rate, and with clipping when it was off (measured on the tiny profile,
    # 8 collapsed configurations restarted from scratch, benchmarks/collapse_fixes.py:
    # x1/3 + clipping beat x1/10 by 0.05-0.16 where the peak was within ~3x of the edge,
    # 0.005-0.02; x1/10 was 0.03 better at 0.04-0.05, and neither was enough above 0.07).
    # A second collapse means a rate far above the edge: a tenth.
    Reason.COLLAPSED: (
        (Action.CLIP_ON, Action.LOWER_LR),
        (Action.CUT_LR,),
        (Action.LOWER_LR, Action.LONGER_WARMUP),
    ),
    # Regularise, never just slow down: the rollback to the best epoch already stops early.
    Reason.OVERFITTING: (
        (Action.AUGMENTATION_ON,),
        (Action.MORE_WEIGHT_DECAY,),
        (Action.MORE_WEIGHT_DECAY, Action.LOWER_LR),
    ),
})
ROLLBACKS = ("best", "before_trouble")
_INSTABILITY_REASONS = frozenset({Reason.NONFINITE_LOSS, Reason.NONFINITE_GRAD,
                                  Reason.LOSS_INCREASE, Reason.GRAD_EXPLOSION})


@dataclass(frozen=True)
class RecoveryConfig:
    """The policy's knobs: budget, factors, ladders, rollback rule."""

    max_recoveries: int = 4
    """Recoveries allowed per run; the next verdict gives up."""
    lr_factor: float = 1 / 3
    """LOWER_LR multiplies the learning rate by this ..."""
    cut_lr_factor: float = 0.1
    """... and CUT_LR (a repeated collapse) by this."""
    clip_factor: float = 0.5
    """TIGHTER_CLIP multiplies grad_clip by this ..."""
    clip_default: float = 1.0
    """... or sets it to this when clipping is off (CLIP_ON too)."""
    skip_radius: int = 2
    """SKIP_BATCHES skips steps [spike - radius, spike + radius]."""
    wd_factor: float = 2.0
    """MORE_WEIGHT_DECAY multiplies weight_decay by this ..."""
    wd_default: float = 0.01
    """... or sets it to this when weight decay is off."""
    ladders: Mapping[Reason, Ladder] = field(default_factory=lambda: DEFAULT_LADDERS, hash=False)
    """Per reason, the rungs to climb; given ladders replace the defaults of their reasons.
    A flat tuple of actions is read as one action per rung."""
    rollback: str = "best"
    """`best`: the best checkpoint before the trouble; `before_trouble`: the last one."""
    suspect_augmentation: bool = True
    """Switch augmentation off when instability follows a recovery that switched it on."""

    def __post_init__(self) -> None:
        if isinstance(self.max_recoveries, bool) or not isinstance(self.max_recoveries, int) \
                or self.max_recoveries < 0:
            raise ValueError(
                f"max_recoveries must be a non-negative integer but got {self.max_recoveries}.")
        for name in ("lr_factor", "cut_lr_factor", "clip_factor"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive) but got {value}.")
        if not self.wd_factor > 1.0 or not math.isfinite(self.wd_factor):
            raise ValueError(f"wd_factor must be greater than 1 but got {self.wd_factor}.")
        for name in ("clip_default", "wd_default"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be positive but got {value}.")
        if isinstance(self.skip_radius, bool) or not isinstance(self.skip_radius, int) \
                or self.skip_radius < 0:
            raise ValueError(
                f"skip_radius must be a non-negative integer but got {self.skip_radius}.")
        if self.rollback not in ROLLBACKS:
            raise ValueError(f"rollback must be one of {', '.join(ROLLBACKS)} "
                             f"but got {self.rollback!r}.")
        merged = dict(DEFAULT_LADDERS)
        for reason, ladder in self.ladders.items():
            merged[Reason(reason)] = _ladder(Reason(reason), ladder)
        object.__setattr__(self, "ladders", MappingProxyType(merged))


def _ladder(reason: Reason, ladder: Iterable[Any]) -> Ladder:
    rungs = tuple((Action(r),) if isinstance(r, (str, Action)) else tuple(map(Action, r))
                  for r in ladder)
    if not rungs or any(not rung for rung in rungs):
        raise ValueError(f"the ladder of {reason.value} must be non-empty rungs of actions "
                         f"but got {ladder!r}.")
    return rungs


def recovery_config(config: TrainConfig) -> RecoveryConfig:
    """The policy for a training configuration: its budget.

    Whether a run recovers on its own (`recovery: false`) is the supervisor's business: an
    explicit `autotune resume` of a run that stopped applies this policy all the same.
    """
    return RecoveryConfig(max_recoveries=config.max_recoveries)


@dataclass(frozen=True)
class Decision:
    """What to do about a divergence: give up, or roll back and change these keys."""

    give_up: bool
    reason: Reason
    rollback_to: int | None = None
    """Logical epoch of the checkpoint to load (0 = the initial weights); None on give-up."""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict, hash=False)
    """TrainConfig key -> (old, new), JSON-able values."""
    actions: tuple[Action, ...] = ()
    explanation: str = ""
    """One or two sentences for the user: what was seen and why this change."""
    level: int | None = None
    """The ladder rung used (None: not a ladder step, e.g. give-up or a suspect rule)."""

    def to_event(self) -> dict[str, Any]:
        """The events.jsonl fields of this decision (the caller adds epoch, global_epoch)."""
        return {
            "kind": "gave_up" if self.give_up else "recovered",
            "reason": self.reason.value,
            "rolled_back_to": self.rollback_to,
            "changes": {k: [old, new] for k, (old, new) in self.changes.items()},
            "actions": [a.value for a in self.actions],
            "explanation": self.explanation,
            "level": self.level,
        }

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> Decision:
        """The Decision an events.jsonl record of kind `recovered` or `gave_up` describes."""
        return cls(
            give_up=event.get("kind") == "gave_up",
            reason=Reason(event["reason"]),
            rollback_to=event.get("rolled_back_to"),
            changes={k: (v[0], v[1]) for k, v in (event.get("changes") or {}).items()},
            actions=tuple(Action(a) for a in event.get("actions") or ()),
            explanation=str(event.get("explanation", "")),
            level=event.get("level"),
        )


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


def decide(verdict: Verdict, config: TrainConfig,
           recoveries: Sequence[Decision | Mapping[str, Any]],
           checkpoint_epochs: Sequence[int], best_epoch: int | None, steps_per_epoch: int,
           cfg: RecoveryConfig) -> Decision:
    """Give up, or choose the rollback target and the changes for a diverged verdict.

    Args:
        verdict: a diverged verdict (its step or epoch locates the trouble).
        config: the configuration in force.
        recoveries: the recoveries made so far in this run, as Decisions or as events.jsonl
            records (records of kind `diverged` or `gave_up` are ignored).
        checkpoint_epochs: logical epochs whose checkpoints are on disk (0 always counts).
        best_epoch: the epoch with the lowest validation loss so far, if any.
        steps_per_epoch: optimizer steps per epoch, to place a step-level verdict.
        cfg: the policy.
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
    ctx = _Context(config, cfg, verdict, target, past)
    if (cfg.suspect_augmentation and reason in _INSTABILITY_REASONS and past
            and Action.AUGMENTATION_ON in past[-1].actions and config.use_augmentation):
        changes, actions = ctx.apply((Action.AUGMENTATION_OFF,))
        return Decision(False, reason, target, changes, actions,
                        _explain(seen, target, where, actions, changes, ctx), level=None)

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


class _Context:
    """Works out each action's new value from the configuration in force."""

    def __init__(self, config: TrainConfig, cfg: RecoveryConfig, verdict: Verdict,
                 target: int, past: list[_Past]) -> None:
        self.config, self.cfg, self.verdict, self.target = config, cfg, verdict, target
        self.aug_blamed = any(Action.AUGMENTATION_OFF in rec.actions for rec in past)

    def apply(self, rung: Rung) -> tuple[dict[str, tuple[Any, Any]], tuple[Action, ...]]:
        """The changes of a rung's actions, dropping those that would change nothing."""
        values: dict[str, Any] = {}
        old: dict[str, Any] = {}
        taken: list[Action] = []
        for action in rung:
            key, new = self._change(action, values)
            current = values.get(key, getattr(self.config, key))
            if new == current:
                continue
            old.setdefault(key, getattr(self.config, key))
            values[key] = new
            taken.append(action)
        changes = {k: (old[k], v) for k, v in values.items() if v != old[k]}
        return changes, tuple(taken)

    def _change(self, action: Action, values: Mapping[str, Any]) -> tuple[str, Any]:
        def now(key: str) -> Any:
            return values.get(key, getattr(self.config, key))

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
            return "warmup_epochs", max(old, min(longer, float(now("epochs"))))
        if action is Action.TIGHTER_CLIP:
            clip = now("grad_clip")
            return "grad_clip", cfg.clip_default if clip <= 0 else clip * cfg.clip_factor
        if action is Action.CLIP_ON:
            clip = now("grad_clip")
            return "grad_clip", cfg.clip_default if clip <= 0 else clip
        if action is Action.MORE_WEIGHT_DECAY:
            wd = now("weight_decay")
            new = cfg.wd_default if wd <= 0 else wd * cfg.wd_factor
            return "weight_decay", min(new, _HIGH["weight_decay"])
        if action is Action.SKIP_BATCHES:
            skip = list(now("skip_batches"))
            step = self.verdict.step
            if step is None:
                return "skip_batches", skip
            around = range(max(0, step - cfg.skip_radius), step + cfg.skip_radius + 1)
            return "skip_batches", sorted(set(skip) | set(around))
        raise ValueError(f"unknown action {action!r}.")


_HIGH: Mapping[str, float] = {f.name: f.metadata["high"] for f in fields(TrainConfig)
                              if f.metadata.get("high") is not None}

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
}
_KEY: Mapping[Action, str] = {
    Action.LOWER_LR: "learning_rate", Action.CUT_LR: "learning_rate",
    Action.SMOOTHING_OFF: "label_smoothing",
    Action.AUGMENTATION_ON: "use_augmentation", Action.AUGMENTATION_OFF: "use_augmentation",
    Action.LONGER_WARMUP: "warmup_epochs", Action.TIGHTER_CLIP: "grad_clip",
    Action.CLIP_ON: "grad_clip", Action.MORE_WEIGHT_DECAY: "weight_decay",
    Action.SKIP_BATCHES: "skip_batches",
}


def _explain(seen: str, target: int, where: str, actions: tuple[Action, ...],
             changes: Mapping[str, tuple[Any, Any]], ctx: _Context) -> str:
    phrases = []
    for action in actions:
        old, new = changes[_KEY[action]]
        step, radius = ctx.verdict.step or 0, ctx.cfg.skip_radius
        phrases.append(_WHY[action].format(old=old, new=new, first=max(0, step - radius),
                                           last=step + radius))
    return f"{seen} Rolled back to epoch {target} ({where}) and {'; '.join(phrases)}."


def apply_changes(config: TrainConfig, decision: Decision) -> TrainConfig:
    """The configuration with a decision's changes applied (validated; unchanged on give-up).

    Raises ValueError when a key's current value is not the decision's `old` one (the
    decision belongs to another configuration, or was applied already).
    """
    for key, (old, _) in decision.changes.items():
        current = getattr(config, key)
        same = (math.isclose(current, old, rel_tol=1e-12)
                if isinstance(old, float) and isinstance(current, float) else current == old)
        if not same:
            raise ValueError(f"{key} must be {old!r} for this decision but the configuration "
                             f"has {current!r}; was it applied already?")
    return config.replace(**{key: new for key, (_, new) in decision.changes.items()})
