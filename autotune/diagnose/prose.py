"""Words and numbers of the findings, in the terms of the trainer that wrote the log.

Our ARC runs are told in their own keys (`use_augmentation`, `skip_batches`, `grad_clip`,
`autotune resume`); a log of any other trainer gets advice any trainer can follow.
"""

from __future__ import annotations

import math

__all__ = ["Terms", "count", "sci"]


def sci(x: float | None, digits: int = 3) -> str:
    """A learning rate the way people write one: 1e-3, 3.3e-4."""
    if x is None:
        return "n/a"
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    exponent = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10**exponent, digits - 1)
    if abs(mantissa) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g}e{exponent}"


def count(n: float, word: str, plural: str = "") -> str:
    """`1 epoch`, `3 epochs`."""
    return f"{n:g} {word if n == 1 else plural or word + 's'}"


class Terms:
    """The advice of the findings, for our ARC runs (`arc`) or for any trainer."""

    def __init__(self, arc: bool) -> None:
        self.arc = arc

    def lower_lr(self, base: float | None) -> str:
        """The usual cut: a third of the peak."""
        if base:
            return f"set learning_rate to {sci(base / 3, 2)} (1/3 of {sci(base, 2)})"
        return "lower learning_rate to 1/3"

    @property
    def clip(self) -> str:
        return ("gradient clipping on (grad_clip: 1.0) if it was off" if self.arc
                else "gradient-norm clipping on (e.g. at 1.0) if it was off")

    def skip_batches(self, at: str) -> str:
        return (f"skip the batches around {at} (skip_batches)" if self.arc
                else f"look at the batches around {at} (a corrupt or mislabelled batch)")

    @property
    def tighten_clip(self) -> str:
        return ("tighten grad_clip (e.g. 0.5)" if self.arc
                else "clip the gradient norm (e.g. at 0.5-1.0)")

    @property
    def memorising(self) -> str:
        return ("the model is memorising the training pairs rather than learning the "
                "transformations" if self.arc
                else "the model fits its training data better while generalising worse")

    def overfit_fix(self, best_epoch: float, best: float) -> str:
        stop = f"stop at the best epoch {best_epoch:g} (val_loss {best:.3g})"
        if self.arc:
            return f"turn augmentation on (use_augmentation: true), add more data, or {stop}."
        return (f"add regularisation (data augmentation, dropout, weight decay) or more data, "
                f"or {stop} (early stopping on the validation loss).")

    @property
    def regularise(self) -> str:
        return ("turn augmentation on (use_augmentation: true)" if self.arc
                else "add regularisation (data augmentation, dropout, weight decay)")

    @property
    def numerics(self) -> str:
        return ("the numerics (fp16 overflow: use bf16 or a GradScaler); keep grad_clip on"
                if self.arc else "the numerics (fp16 overflow: use bf16 or a loss scaler); "
                "keep gradient clipping on")

    @property
    def resume(self) -> str:
        return ("or resume it with recovery on (autotune resume RUN_DIR)" if self.arc
                else "or continue it with recovery on (autotune.supervise on the same "
                "run directory, recovery='on')")
