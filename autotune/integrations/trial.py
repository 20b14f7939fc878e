"""A callback's Optuna trial: reported, pruned and recorded as `autotune search` does.

The search's own `TrialRecorder` gives the supervisor its hooks: the validation loss of
every epoch that passed detection is reported at step `global_epoch` (epochs of compute,
so a value after a rollback is never dropped as already reported), the trial's pruner is
asked after each, a divergence is recovered or pruned by the study's triage, and the
surviving timeline goes into the `timeline` attribute the study's pruner reads. At the
end the trial gets the search's attributes (`effective_config`, `events`, `changes`,
`divergences`, `recoveries`, `status`, `stable`) and its `diverged` constraint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from autotune.events import EventKind
from autotune.recovery.supervisor import Hooks, RunResult
from autotune.search.dashboard import TrialStory, store_dir
from autotune.search.objective import record_story
from autotune.search.recorder import TrialRecorder
from autotune.search.study import ownership
from autotune.search.vocabulary import SearchEvent, TrialAttr

__all__ = ["TrialLink", "unstable_reason"]


def _ignore(event: SearchEvent) -> None:
    """A callback has no progress display to feed."""


def unstable_reason(result: RunResult) -> str | None:
    """Why a run that ended diverged is pruned (None: it ended stable)."""
    if result.stable:
        return None
    gave_up = next((e for e in reversed(result.events) if e.kind is EventKind.GAVE_UP), None)
    if gave_up is not None:
        return f"recovery budget spent: {gave_up.explanation}"
    last = next((e for e in reversed(result.events) if e.kind is EventKind.DIVERGED), None)
    return (f"diverged ({last.reason if last else result.status.value}) and not recovered: "
            f"recovery is off")


class TrialLink:
    """The supervisor's hooks for `trial`, and the trial's record at the end."""

    def __init__(self, trial: optuna.Trial, run_path: Path) -> None:
        if not isinstance(trial, optuna.Trial):
            raise TypeError(f"trial must be an optuna.Trial but got {type(trial).__name__}.")
        self.trial = trial
        self.run_path = Path(run_path)
        self.recorder = TrialRecorder(trial, self.run_path, _ignore)

    def hooks(self) -> Hooks:
        return self.recorder.hooks()

    def record(self, result: RunResult, pruned_reason: str | None = None) -> None:
        """Store the run's outcome on the trial, as the search stores a finished trial's."""
        ownership.release()
        reason = pruned_reason or self.recorder.pruned_reason or unstable_reason(result)
        recorder = self.recorder
        story = TrialStory(number=self.trial.number, status=result.status.value,
                           stable=result.stable and reason is None,
                           params=dict(self.trial.params), effective=dict(result.config),
                           events=list(result.events),
                           timeline=recorder.timeline if recorder.synced else None,
                           pruned_reason=reason)
        extra: dict[str, Any] = {TrialAttr.STABLE: story.stable,
                                 TrialAttr.RUN_DIR: str(self.run_path),
                                 TrialAttr.BEST_EPOCH: result.best_epoch,
                                 TrialAttr.GLOBAL_EPOCHS: result.global_epochs}
        if reason is not None:
            extra[TrialAttr.PRUNED_REASON] = reason
        record_story(self.trial, story, extra, store_dir(self.run_path))
