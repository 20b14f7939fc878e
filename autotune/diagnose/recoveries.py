"""Findings from a run's events: the recoveries it made, and where it gave up or stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from autotune.diagnose.findings import Finding, FindingCode, Severity, finding
from autotune.diagnose.prose import count, sci
from autotune.diagnose.timeline import Context
from autotune.events import Event, EventKind, changes_of, describe_changes, fmt

__all__ = ["check_events", "parse_events", "told_epochs"]


def parse_events(records: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The events of an events.jsonl; records of an unknown kind are left out."""
    out = []
    for record in records:
        try:
            out.append(Event.from_dict(record))
        except (KeyError, ValueError, TypeError):
            continue
    return out


def told_epochs(events: Sequence[Event]) -> set[float]:
    """The global epochs of divergences the events already tell about."""
    kinds = (EventKind.DIVERGED, EventKind.RECOVERED, EventKind.GAVE_UP, EventKind.ALARM)
    return {float(e.global_epoch) for e in events if e.kind in kinds}


def check_events(events: Sequence[Event], ctx: Context) -> list[Finding]:
    """A summary of the recoveries, and what gave up or was left diverged."""
    findings: list[Finding] = []
    pending: list[Event] = []
    recoveries: list[Event] = []
    for event in events:
        if event.kind is EventKind.DIVERGED:
            pending.append(event)
        elif event.kind is EventKind.RECOVERED:
            pending.clear()
            recoveries.append(event)
        elif event.kind is EventKind.GAVE_UP:
            pending.clear()
            effective = {k: v[1] for k, v in changes_of(recoveries).items()}
            findings.append(_stopped(FindingCode.GAVE_UP, event, len(recoveries), effective,
                                     ctx))
    effective = {k: v[1] for k, v in changes_of(recoveries).items()}
    if recoveries:
        findings.append(_recovered(recoveries, effective))
    findings += [_stopped(FindingCode.DIVERGED, e, len(recoveries), effective, ctx)
                 for e in pending]
    return findings


def _recovered(recoveries: Sequence[Event], effective: Mapping[str, Any]) -> Finding:
    parts = []
    for r in recoveries:
        back = (f"rolled back to epoch {r.rolled_back_to} and "
                if r.rolled_back_to is not None else "")
        parts.append(f"at global epoch {r.global_epoch} ({r.reason}) it {back}changed "
                     f"{describe_changes(r.changes)}")
    now = ", ".join(f"{k}: {fmt(v)}" for k, v in effective.items()) or "unchanged"
    message = (f"The run diverged and recovered {count(len(recoveries), 'time')}: "
               f"{'; '.join(parts)}. "
               f"Metrics logged before each rollback belong to an abandoned branch; the "
               f"configuration in force now has {now}.")
    fix = ("nothing to do for this run; start new runs from its effective_config.yaml "
           f"({now}) so that they do not diverge the same way.")
    evidence = {"recoveries": len(recoveries),
                "events": [{"global_epoch": r.global_epoch, "reason": r.reason,
                            "rolled_back_to": r.rolled_back_to, "changes": r.changes}
                           for r in recoveries],
                "effective_changes": dict(effective)}
    return finding(FindingCode.RECOVERED, Severity.INFO, message, evidence, fix)


def _stopped(code: FindingCode, event: Event, recoveries: int, effective: Mapping[str, Any],
             ctx: Context) -> Finding:
    """A run that gave up (recovery budget spent) or diverged with recovery off."""
    reason = event.reason
    where = f"global epoch {event.global_epoch}"
    if event.step is not None:
        where += f", step {event.step}"
    if code is FindingCode.GAVE_UP:
        message = (f"The run gave up at {where}: it diverged again ({reason}) after "
                   f"{count(recoveries, 'recovery', 'recoveries')}, so the recovery budget "
                   f"was spent and training stopped.")
        then = "or raise max_recoveries"
    else:
        message = (f"The run diverged at {where} ({reason}) and was not recovered (recovery "
                   f"off, or the run stopped there).")
        then = ctx.terms.resume
    lr = effective.get("learning_rate")
    base = lr if isinstance(lr, (int, float)) and lr > 0 else ctx.base_lr(ctx.points[-1])
    if reason == "collapsed" and base:
        fix = (f"train again from the start with learning_rate {sci(base / 3, 2)} (1/3 of "
               f"{sci(base, 2)}) and {ctx.terms.clip}, {then}.")
    elif reason == "overfitting":
        fix = f"{ctx.terms.regularise}, add data, or stop at the best epoch; {then}."
    elif base:
        fix = (f"train again from effective_config.yaml with learning_rate "
               f"{sci(base / 3, 2)} (1/3 of {sci(base, 2)}) and a longer warmup_epochs, "
               f"{then}.")
    else:
        fix = f"train again with learning_rate x 1/3 and a longer warmup_epochs, {then}."
    evidence = {"global_epoch": event.global_epoch, "step": event.step, "reason": reason,
                "recoveries": recoveries, "detail": event.message,
                "suggested_learning_rate": base / 3 if base else None}
    return finding(code, Severity.ERROR, message, evidence, fix)
