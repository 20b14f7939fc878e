"""What the supervisor needs of a trainer: `Trainable`, a small `typing.Protocol`.

Any object with these members can be supervised (`autotune.supervise`): our ARC
`trainer.loop.Trainer` is one implementation, a user's own trainer another. The supervisor
keeps the epoch counters, the per-step history and the checkpoints itself; the trainer only
trains, evaluates, saves and restores its state, and takes changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["HPARAM_KEYS", "OnStep", "Trainable"]

# The hyperparameters recovery may change, under the contract's names. A trainer's
# `hparams` holds those it has; a key it lacks is never changed.
HPARAM_KEYS = ("learning_rate", "warmup_epochs", "label_smoothing", "use_augmentation",
               "grad_clip", "weight_decay", "skip_batches")

OnStep = Callable[[int, float, "float | None"], None]
"""`on_step(step, loss, grad_norm)`: called for every step; raises to stop it unapplied."""


@runtime_checkable
class Trainable(Protocol):
    """A trainer the supervisor can drive (see the contract's "Python API").

    Optional members the supervisor reads when present: `steps_per_epoch` (int, to place a
    step-level divergence), `chance_loss` (the validation loss of a model that knows
    nothing, e.g. ln(classes)), `marginal_loss` and `train_marginal_loss` (the loss of a
    model that learned only the class frequencies, for the collapse check) and `device`
    (where checkpoints are loaded to; the CPU when absent).

    Optional members for a run that ended stable (the ARC trainer has them,
    `autotune.recovery.runs.ArcTrainer`; a search works without them):

    - `held_out_scores() -> Mapping[str, float]`: scores on data the search never saw
      (ARC: `test_pass2`, `test_pass1`, `test_copy_pass`, ...). They go into summary.json
      under `test`; a search stores `test_pass2`, `test_pass1` and `test_copy_pass` as
      trial attributes, shows them for the winner and exports them.
    - `schedule_audit(since_step) -> Mapping[str, Any]`: the trainer's check that the
      learning rate it applied from `since_step` on (the last recovery) is the one its
      schedule intends (`ok`, `message`, ...); into summary.json under `schedule_audit`.
    - `injects_faults: bool`: True when the trainer applies `AUTOTUNE_INJECT` itself; a
      trainer without it meets the faults at `on_step` (`autotune.recovery.faults`).
    """

    @property
    def hparams(self) -> Mapping[str, Any]:
        """The current values of the hyperparameters recovery may change (`HPARAM_KEYS`)."""
        ...

    def train_epoch(self, on_step: OnStep) -> Mapping[str, Any]:
        """Train one epoch; return at least `train_loss` (and `lr`, the rate applied at the
        last step, where it can). Call `on_step(step, loss, grad_norm)` after backward and
        before the optimizer step, every step; when it raises, apply no update for that
        step and let the exception through."""
        ...

    def evaluate(self) -> Mapping[str, Any]:
        """Return at least `val_loss` (no label smoothing, no augmentation)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs, as tensors, numbers, strings, lists and dicts."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by `state_dict`."""
        ...

    def apply_changes(self, changes: Mapping[str, Any]) -> object:
        """Set `{key: new_value}` from the next step on; it must survive the trainer's own
        scheduler and a later `load_state_dict` of an older state. What it returns is
        ignored (the ARC trainer returns its new TrainConfig)."""
        ...
