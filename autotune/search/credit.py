"""Credit for a configuration recovery tamed: pure decisions the objective acts on.

A recovered trial that did well has its effective configuration queued as a trial of its
own, unless its last recovery restarted it from its initial weights with only searched
parameters changed: then it already is a from-scratch run of that configuration, and the
sampler sees it as a stand-in (`autotune.search.sampler`). See `autotune.search.objective`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from autotune.events import Event, EventKind, changes_of
from autotune.search.space import Space

__all__ = ["credit_params", "deserves_credit", "restarted_from_scratch"]


def deserves_credit(value: float, stable_values: Iterable[float]) -> bool:
    """A recovered trial did well: as good as the median stable trial so far (or the first)."""
    others = [v for v in stable_values if math.isfinite(v)]
    if not math.isfinite(value):
        return False
    return not others or value <= statistics.median(others)


def restarted_from_scratch(space: Space, events: Iterable[Event | Mapping[str, Any]]) -> bool:
    """The last recovery rolled back to the initial weights and recovery changed only
    searched parameters: the surviving timeline is a from-scratch run of the effective
    configuration."""
    recovered = [e for e in map(_event, events) if e.kind is EventKind.RECOVERED]
    searched = {p.key for p in space.params}
    return bool(recovered) and recovered[-1].rolled_back_to == 0 \
        and set(changes_of(recovered)) <= searched


def _event(item: Event | Mapping[str, Any]) -> Event:
    return item if isinstance(item, Event) else Event.from_dict(item)


def credit_params(space: Space, sampled: Mapping[str, Any],
                  effective: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The effective configuration as parameters of the space, or None and why not."""
    projected = space.project(dict(effective))
    if projected is None:
        outside = [p.key for p in space.params if not p.contains(effective.get(p.key))]
        return None, f"effective {', '.join(outside)} outside the search space"
    if all(projected[k] == sampled.get(k) for k in projected):
        return None, "recovery changed no searched parameter"
    return projected, "enqueued"
