"""A trial's surviving timeline: which of its reports a rollback left standing.

Reports are at global epochs (epochs of compute, they never go back); once a rollback
happened the objective keeps `[[global_epoch, epoch], ...]` of the reports still on the
run's timeline in the trial's `timeline` user attribute. The pruner, the sampler's view
and the recover-or-prune triage read trials through these functions.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial

from autotune.search.vocabulary import TrialAttr

__all__ = ["has_rollback", "timeline_values"]


def has_rollback(trial: FrozenTrial) -> bool:
    """Whether a rollback undid some of the trial's reports: its `timeline` attribute (the
    objective writes it once a rollback happened) maps a report to another logical epoch,
    or leaves a report out. A trial without the attribute (not ours) has none."""
    pairs = trial.user_attrs.get(TrialAttr.TIMELINE)
    if not isinstance(pairs, list):
        return False
    kept = {int(g) for g, _ in pairs}
    return any(int(g) != int(e) for g, e in pairs) or not kept >= set(trial.intermediate_values)


def timeline_values(trial: FrozenTrial) -> dict[int, float]:
    """A trial's reported values on its surviving timeline, keyed by logical epoch.

    Reports are at global epochs (they never go back); a rollback makes some of them stale.
    A trial without a rollback keeps its values exactly as reported, NaN and inf included,
    so a wrapped pruner sees it as it would without the wrapper.
    """
    values = trial.intermediate_values
    if not has_rollback(trial):
        return dict(values)
    out: dict[int, float] = {}
    for global_epoch, epoch in trial.user_attrs[TrialAttr.TIMELINE]:
        value = values.get(int(global_epoch))
        if value is not None:
            out[int(epoch)] = value
    return out
