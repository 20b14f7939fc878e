"""Step-level detectors: a non-finite loss or gradient, a loss spike, a gradient explosion.

Each looks at the per-step training loss and gradient norm of the current timeline and
returns `OK` or a diverged Verdict. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from itertools import islice

from autotune.detect.thresholds import DetectorConfig
from autotune.detect.verdict import OK, Reason, Verdict, nonfinite_loss

__all__ = ["check_nonfinite", "check_step", "healthy_before"]


def check_nonfinite(loss: float, grad_norm: float | None, step: int) -> Verdict:
    """A NaN or infinite training loss or gradient norm at optimizer step `step`."""
    if not math.isfinite(loss):
        return nonfinite_loss("training", loss, f"step {step}", {"loss": loss}, step=step)
    if grad_norm is not None and not math.isfinite(grad_norm):
        return Verdict(True, Reason.NONFINITE_GRAD,
                       f"The gradient norm is {grad_norm} at step {step} "
                       f"(training loss {loss:.4g}).",
                       {"loss": loss, "grad_norm": grad_norm}, step=step)
    return OK


def check_step(losses: Sequence[float], grad_norms: Sequence[float], step: int,
               cfg: DetectorConfig) -> Verdict:
    """Check the latest optimizer step against the steps before it.

    Args:
        losses: per-step training losses of the current timeline; the last one is `step`'s.
        grad_norms: per-step gradient norms before clipping, aligned with `losses` (may be
            empty when not recorded).
        step: the optimizer step of the last element.
        cfg: the thresholds.

    Returns:
        A non-finite verdict first, then a loss spike, then a gradient explosion, else `OK`.
        A spike is checked before an explosion because a bad batch inflates both.
    """
    if len(losses) == 0:
        return OK
    loss = float(losses[-1])
    grad = float(grad_norms[-1]) if len(grad_norms) > 0 else None
    verdict = check_nonfinite(loss, grad, step)
    if verdict:
        steady = healthy_before(losses, grad_norms, cfg)
        return replace(verdict, evidence={**verdict.evidence, "sudden": float(steady)})
    verdict = _check_spike(loss, _preceding(losses, cfg.spike_window), step, cfg)
    if verdict or grad is None:
        return verdict
    verdict = _check_explosion(grad, _preceding(grad_norms, cfg.grad_window), step, cfg)
    if verdict and cfg.clipped and not _rising(loss, _preceding(losses, cfg.spike_window)):
        return OK  # clipping cut the step down and the loss did not suffer: no harm done
    if verdict and cfg.warmup_grace and step < cfg.warmup_steps:
        return OK  # the rate still climbs: the run gets over such a jump by itself
    return verdict


def healthy_before(losses: Sequence[float], grad_norms: Sequence[float],
                   cfg: DetectorConfig) -> bool:
    """Nothing in the steps before the last one shows a climb: every one of them finite, and
    the step just before neither a loss spike nor a gradient explosion against the steps
    before that. A non-finite value out of such a stretch came without warning (a bad
    batch, a numerical fluke), not at the end of a climb. A run's first steps, too few to
    judge a spike (`spike_min_steps`), show no climb either: blaming the batch there costs a
    replay of less than an epoch, and a configuration that is at fault meets the next
    non-finite value within steps, which climbs the ladder (docs/decisions.md)."""
    before = _preceding(losses, cfg.spike_window + 1)  # the finite ones among them
    if len(before) < min(len(losses) - 1, cfg.spike_window + 1):
        return False  # a non-finite step before it
    if len(before) > cfg.spike_min_steps and _check_spike(before[-1], before[:-1], 0, cfg):
        return False
    grads = _preceding(grad_norms, cfg.grad_window + 1)
    return len(grads) < cfg.grad_min_steps + 1 or not _check_explosion(grads[-1], grads[:-1],
                                                                       0, cfg)


def _rising(loss: float, window: list[float]) -> bool:
    """The loss is above the running mean of the window before it."""
    return bool(window) and loss > math.fsum(window) / len(window)


def _preceding(values: Sequence[float], window: int) -> list[float]:
    """The finite values among the `window` before the last (works on deques too)."""
    n = len(values)
    head = islice(values, max(0, n - 1 - window), max(0, n - 1))
    return [float(v) for v in head if math.isfinite(v)]


def _check_spike(loss: float, window: list[float], step: int, cfg: DetectorConfig) -> Verdict:
    if len(window) < cfg.spike_min_steps:
        return OK
    mean = math.fsum(window) / len(window)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in window) / len(window))
    threshold = max(mean + cfg.spike_sigmas * std, cfg.spike_ratio * mean)
    if loss <= threshold:
        return OK
    return Verdict(True, Reason.LOSS_SPIKE,
                   f"The training loss jumped to {loss:.4g} at step {step}, "
                   f"{loss / mean if mean > 0 else math.inf:.3g}x its running mean {mean:.4g} "
                   f"(std {std:.3g}) over the previous {len(window)} steps.",
                   {"loss": loss, "mean": mean, "std": std, "threshold": threshold,
                    "window": float(len(window))}, step=step)


def _check_explosion(grad: float, window: list[float], step: int,
                     cfg: DetectorConfig) -> Verdict:
    if len(window) < cfg.grad_min_steps:
        return OK
    ordered = sorted(window)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    # A zero median (no gradient at all) gives no scale to compare with.
    if median <= 0.0 or grad <= cfg.grad_factor * median:
        return OK
    return Verdict(True, Reason.GRAD_EXPLOSION,
                   f"The gradient norm jumped to {grad:.4g} at step {step}, {grad / median:.3g}x "
                   f"its running median {median:.4g} over the previous {len(window)} steps.",
                   {"grad_norm": grad, "median": median,
                    "threshold": cfg.grad_factor * median, "window": float(len(window))},
                   step=step)
