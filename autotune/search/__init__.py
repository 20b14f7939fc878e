"""The search: an Optuna study in which every trial is a supervised run.

`prepare` validates the flags and creates or joins the study (`study.plan`), `run_search`
runs its workers to the requested number of trials and re-checks the winner (`outcome`).
A trial's logic lives here: the space (`space`), the objective (`objective`), the pruner
(`pruner`), the sampler (`sampler`), the counts (`tally`) and the search's strings
(`vocabulary`); the study's infrastructure (storages, workers, dead trials) in `study/`.
"""

from autotune.search.outcome import (
    SearchOutcome,
    Winner,
    confirm,
    resume,
    run_search,
    safe_sink,
    winner_info,
)
from autotune.search.pruner import TimelinePruner, default_pruner, timeline_values
from autotune.search.salvage import Salvage, salvage_of
from autotune.search.study.plan import (
    DEFAULT_STUDY,
    DEFAULT_TRIALS,
    SearchSettings,
    StudyPlan,
    prepare,
    stored_plan,
)
from autotune.search.study.storage import (
    DEFAULT_STORAGE,
    Heartbeat,
    load_study,
    mask_url,
    open_storage,
    storage_url,
)
from autotune.search.study.workers import reap, work
from autotune.search.tally import FINISHED, Tally, next_action, tally, winner_of
from autotune.search.vocabulary import (
    NextAction,
    SearchEvent,
    SearchEventKind,
    StudyAttr,
    SystemAttr,
    TriageChoice,
    TrialAttr,
)

# Public names kept from before the vocabulary module.
CONFIRM_ATTR = StudyAttr.CONFIRMATION
PLAN_ATTR = StudyAttr.PLAN

__all__ = [
    "CONFIRM_ATTR",
    "DEFAULT_STORAGE",
    "DEFAULT_STUDY",
    "DEFAULT_TRIALS",
    "FINISHED",
    "PLAN_ATTR",
    "Heartbeat",
    "NextAction",
    "SearchEvent",
    "SearchEventKind",
    "StudyAttr",
    "SystemAttr",
    "TrialAttr",
    "TriageChoice",
    "Salvage",
    "SearchOutcome",
    "SearchSettings",
    "StudyPlan",
    "Tally",
    "TimelinePruner",
    "Winner",
    "confirm",
    "default_pruner",
    "load_study",
    "mask_url",
    "next_action",
    "open_storage",
    "prepare",
    "reap",
    "resume",
    "run_search",
    "safe_sink",
    "salvage_of",
    "storage_url",
    "stored_plan",
    "tally",
    "timeline_values",
    "winner_info",
    "winner_of",
    "work",
]
