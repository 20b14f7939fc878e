"""What a trial shows in optuna-dashboard: a compact summary, its history, a note.

optuna-dashboard shows every user attribute, but cuts a non-string one at 1,024 characters
of JSON (`MAX_ATTR_CHARS`): a full event record takes about 630, so a trial with two
recoveries would show broken JSON. So a trial's user attributes hold a compact summary
(`TrialStory.attrs`: the reasons, what changed, the counts, the effective configuration,
the rolled-back steps, and `events` with only the fields the exports and plots read), and
the full recovery history (every event with its message, evidence and explanation, the
surviving timeline) goes where size does not matter:

- an Optuna artifact (`optuna.artifacts.upload_artifact`, JSON) in a file store next to the
  study's artifacts folder (`store_dir`), which the dashboard lists and serves when started
  with `--artifact-dir`;
- a Markdown trial note (`optuna_dashboard.save_note`, an optional dependency: without it
  the note is skipped and a debug line logged): the effective configuration against the
  sampled one, each event in words, and which intermediate values a rollback undid. The
  dashboard draws every reported value on one line, so the note and the
  `rolled_back_steps` attribute say which of them left the trial's timeline.

The story is built by pure functions (`TrialStory`, `compact_events`, `rolled_back_steps`);
`publish` is the one effect (write, upload, save).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from autotune.events import Event, EventCounts, EventKind, describe_changes, fmt
from autotune.jsonio import jsonable
from autotune.search.vocabulary import TrialAttr

__all__ = ["MAX_ATTR_CHARS", "STORE_FOLDER", "TrialStory", "compact_event", "compact_events",
           "oversized", "publish", "rolled_back_steps", "store_dir"]

log = logging.getLogger(__name__)

MAX_ATTR_CHARS = 1024
"""optuna-dashboard (0.16-0.21, `_serializer.MAX_ATTR_LENGTH`) cuts the JSON of a
non-string user attribute at this many characters."""
STORE_FOLDER = "optuna-artifacts"
HISTORY_MIMETYPE = "application/json"
_CORE = ("kind", "reason", "epoch", "global_epoch")


def store_dir(artifacts: Path | str) -> Path:
    """The artifact store of a study whose runs live in `artifacts`: a folder beside it
    (`studies/artifacts/optuna-artifacts` for the default `studies/artifacts/STUDY`), shared
    by the studies of one storage, which is what `optuna-dashboard --artifact-dir` serves."""
    return Path(artifacts).parent / STORE_FOLDER


# -- pure: the compact summary ------------------------------------------------------------

def _size(value: Any) -> int:
    """The length of `value` as optuna-dashboard serialises it (`json.dumps`)."""
    return len(json.dumps(jsonable(value)))


def compact_event(event: Event) -> dict[str, Any]:
    """An event with the fields the exports, report and plots read: kind, reason, epoch,
    global epoch, and where set the rollback target and the changes."""
    out: dict[str, Any] = {"kind": event.kind.value, "reason": event.reason,
                           "epoch": event.epoch, "global_epoch": event.global_epoch}
    if event.rolled_back_to is not None:
        out["rolled_back_to"] = event.rolled_back_to
    if event.changes:
        out["changes"] = {k: list(v) for k, v in event.changes.items()}
    return out


def compact_events(events: Sequence[Event], budget: int = MAX_ATTR_CHARS) -> list[dict[str, Any]]:
    """The compact events, within `budget` characters of JSON.

    When they do not fit, a divergence that a recovery or give-up of the same reason and
    epoch answers goes first (that record repeats its reason and epoch); then the oldest
    records, which the `changes` attribute and the artifact still hold.
    """
    full = [compact_event(e) for e in events]
    if _size(full) <= budget:
        return full
    kept = [c for c, nxt in zip(full, [*full[1:], None])
            if not (c["kind"] == EventKind.DIVERGED.value and nxt is not None
                    and nxt["kind"] in (EventKind.RECOVERED.value, EventKind.GAVE_UP.value)
                    and (nxt["reason"], nxt["epoch"]) == (c["reason"], c["epoch"]))]
    while kept and _size(kept) > budget:
        kept.pop(0)
    return kept


def rolled_back_steps(reported: Iterable[int],
                      timeline: Sequence[Sequence[int]] | None) -> list[int]:
    """The steps (global epochs) of reported values a rollback undid: reported, but not on
    the surviving timeline (`[[global_epoch, epoch], ...]`; None: no rollback happened)."""
    if timeline is None:
        return []
    kept = {int(g) for g, _ in timeline}
    return sorted(int(s) for s in set(reported) - kept)


@dataclass(frozen=True)
class TrialStory(EventCounts):
    """What a finished trial went through, for its attributes, note and artifact."""

    number: int
    status: str
    stable: bool
    params: dict[str, Any]
    """The sampled parameters."""
    effective: dict[str, Any]
    """The configuration the run ended with."""
    events: list[Event] = field(default_factory=list)
    rolled_back: list[int] = field(default_factory=list)
    """Steps (global epochs) whose reported values a rollback undid."""
    timeline: list[list[int]] | None = None
    pruned_reason: str | None = None

    @property
    def unrecovered(self) -> int:
        """The stored `diverged` constraint: 0 for a trial that ended stable (a salvaged one
        included), its divergences otherwise (see `autotune.search.sampler`)."""
        return 0 if self.stable else self.divergences

    @property
    def reasons(self) -> list[str]:
        """The reason of each divergence, in order."""
        return [e.reason for e in self.events if e.kind is EventKind.DIVERGED]

    def has_story(self) -> bool:
        """Whether there is anything to tell beyond the attributes (a note, an artifact)."""
        return bool(self.events or self.rolled_back)

    def attrs(self) -> dict[str, Any]:
        """The trial's user attributes: each one's JSON within `MAX_ATTR_CHARS`."""
        return jsonable({
            TrialAttr.EFFECTIVE_CONFIG: dict(self.effective),
            TrialAttr.EVENTS: compact_events(self.events),
            TrialAttr.CHANGES: self.changes, TrialAttr.REASONS: self.reasons,
            TrialAttr.DIVERGENCES: self.divergences, TrialAttr.RECOVERIES: self.recoveries,
            TrialAttr.BATCH_SKIPS: self.batch_skips,
            TrialAttr.ROLLED_BACK_STEPS: list(self.rolled_back),
            TrialAttr.STATUS: self.status})

    def history(self) -> dict[str, Any]:
        """The full recovery history (the artifact's content)."""
        return jsonable({
            "trial": self.number, "status": self.status, "stable": self.stable,
            "pruned_reason": self.pruned_reason, "sampled": dict(self.params),
            "effective_config": dict(self.effective), "changes": self.changes,
            "divergences": self.divergences, "recoveries": self.recoveries,
            "rolled_back_steps": list(self.rolled_back), "timeline": self.timeline,
            "events": [e.to_dict() for e in self.events]})

    def note(self, artifact: str | None = None) -> str:
        """The trial's Markdown note for optuna-dashboard."""
        outcome = ("salvaged" if self.stable and self.divergences
                   else "clean" if self.stable else self.status)
        lines = [f"## Trial {self.number}: {outcome}",
                 f"{self.divergences} divergence(s), {self.recoveries} recovery(ies); status "
                 f"`{self.status}`; constraint `diverged` = {self.unrecovered} "
                 f"({'feasible' if self.unrecovered == 0 else 'infeasible'})."]
        blamed = self.divergences - self.batch_skips
        if blamed > 0:
            lines.append(f"The sampler learns that the sampled configuration diverged "
                         f"({blamed}); the effective one is what this trial's "
                         f"value belongs to.")
        elif self.divergences:
            lines.append("Each divergence was put down to its batch (skipped, nothing else "
                         "changed): the sampler sees the configuration as it ran.")
        if self.pruned_reason:
            lines.append(f"Pruned: {self.pruned_reason}.")
        lines += ["", "### What recovery changed", "",
                  "| key | sampled | effective |", "| --- | --- | --- |"]
        lines += [f"| `{k}` | {fmt(old, '.6g')} | {fmt(new, '.6g')} |"
                  for k, (old, new) in self.changes.items()] or ["| (nothing) | | |"]
        lines += ["", "### Recovery history", ""]
        lines += [f"{i}. {_event_line(e)}" for i, e in enumerate(self.events, 1)] or ["none"]
        lines += ["", "### Undone intermediate values", ""]
        if self.rolled_back:
            steps = ", ".join(str(s) for s in self.rolled_back)
            lines.append(f"The values reported at steps {steps} (global epochs) were undone "
                         f"by a rollback: the chart still draws them, the pruner ignores "
                         f"them (attribute `rolled_back_steps`).")
        else:
            lines.append("none: every reported value is on the surviving timeline.")
        lines += ["", "### Effective configuration", "", "```yaml"]
        lines += [f"{k}: {json.dumps(jsonable(v))}" for k, v in self.effective.items()]
        lines += ["```"]
        if artifact:
            lines += ["", f"Full history: artifact `{artifact}` (JSON)."]
        return "\n".join(lines) + "\n"


def _event_line(event: Event) -> str:
    """One event in words."""
    where = f"epoch {event.epoch} (global {event.global_epoch})"
    text = f"**{event.kind.value}** `{event.reason}` at {where}"
    if event.rolled_back_to is not None:
        text += f", rolled back to epoch {event.rolled_back_to}"
    if event.changes:
        text += f"; {describe_changes(event.changes)}"
    detail = event.explanation or event.message
    return f"{text}: {detail}" if detail else text


# -- effects: the artifact and the note ---------------------------------------------------

def publish(trial: optuna.Trial, story: TrialStory, store: Path) -> str | None:
    """Upload the story's history as an artifact of `trial` into the file store `store`
    and save its note; returns the artifact's id (None when the upload failed, which is
    logged: what the dashboard shows never costs a trial)."""
    artifact_id: str | None = None
    name = f"recovery-history-trial-{story.number:04d}.json"
    try:
        store.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(story.history(), indent=1) + "\n")
            artifact_id = upload_artifact(artifact_store=FileSystemArtifactStore(str(store)),
                                          file_path=str(path), study_or_trial=trial,
                                          mimetype=HISTORY_MIMETYPE)
    except OSError:
        log.warning("trial %d: could not store its recovery history in %s", trial.number,
                    store, exc_info=True)
    save_note(trial, story.note(name if artifact_id else None))
    return artifact_id


def save_note(trial: optuna.Trial | optuna.Study, body: str) -> bool:
    """Save a Markdown note with optuna-dashboard's `save_note`; False (a debug line) when
    optuna-dashboard is not installed."""
    try:
        from optuna_dashboard import save_note as dashboard_save_note
    except ImportError:
        log.debug("optuna-dashboard is not installed: trial note skipped")
        return False
    dashboard_save_note(trial, body)
    return True


def oversized(attrs: Mapping[str, Any]) -> dict[str, int]:
    """The attributes whose JSON is longer than `MAX_ATTR_CHARS`, with their lengths."""
    return {k: _size(v) for k, v in attrs.items()
            if not isinstance(v, str) and _size(v) > MAX_ATTR_CHARS}
