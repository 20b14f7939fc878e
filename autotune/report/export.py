"""Export a study: the winner's effective configuration as YAML, every trial as CSV.

Both build text and leave writing to `write_output`, which refuses a folder that does not
exist before anything is written.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.trial import FrozenTrial, TrialState

from autotune.atomic import atomic_write_text
from autotune.errors import ConfigError, excerpt, quote_path
from autotune.events import changes_of, describe_changes, fmt
from autotune.recovery.runs import RunConfig
from autotune.search.tally import held_out_scores, winner_of
from autotune.search.vocabulary import StudyAttr, TrialAttr
from autotune.secrets import mask_url

__all__ = ["FORMATS", "NoWinner", "check_output", "export", "export_csv", "export_yaml",
           "trials_frame", "write_output"]

FORMATS = ("yaml", "csv")
FIRST = ["number", "state", "value", "duration_s"]
OURS = ["recoveries", "diverged", "stable", "divergences", "status", "pruned_reason",
        "retry_of", "credit_of", "test_pass2", "test_pass1", "test_copy_pass", "run_dir"]


class NoWinner(Exception):
    """The study has no trial that ended stable (the CLI's exit code 3)."""


def check_output(path: Path | None, protected: Sequence[Path] = ()) -> None:
    """ConfigError when `path` cannot be written (its folder missing, or it is a folder)
    or is one of the `protected` files (the study's own database or journal)."""
    if path is None:
        return
    if not str(path):
        raise ConfigError("--output must be a file name but got ''.")
    for own in protected:
        if _same_file(path, own):
            raise ConfigError(f"--output {quote_path(path)} is the study's own storage "
                              f"file ({quote_path(own)}); writing there would destroy the "
                              f"study. Give another file.")
    if path.is_dir():
        raise ConfigError(f"--output {quote_path(path)} is a folder; give a file name.")
    if not path.parent.is_dir():
        raise ConfigError(f"--output {quote_path(path)}: folder {quote_path(path.parent)} does not "
                          f"exist.")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def write_output(text: str, path: Path, protected: Sequence[Path] = ()) -> None:
    """Write atomically (after `check_output`)."""
    check_output(path, protected)
    atomic_write_text(path, text)


def export_yaml(study: optuna.Study, storage: str = "") -> str:
    """The winner's effective configuration: a bare mapping `autotune train --config`
    accepts, its provenance in comment lines at the top."""
    best = winner_of(study.get_trials(deepcopy=False))
    if best is None:
        raise NoWinner(f"no trial of study {excerpt(study.study_name)} ended stable; nothing to "
                       f"export (see `autotune report --study {study.study_name}`).")
    plan = study.user_attrs.get(StudyAttr.PLAN) or {}
    effective = dict(best.user_attrs[TrialAttr.EFFECTIVE_CONFIG])
    own = plan.get("kind", "arc") != "arc"  # a user's trainer: its keys are its own
    mapping = effective if own else RunConfig.from_dict(effective).to_dict()
    use = (f"the effective configuration of {plan.get('trainer') or 'build(trial)'} "
           f"(its hyperparameters, epochs and the supervisor's settings)" if own
           else "autotune train --config FILE")
    attrs = best.user_attrs
    check = study.user_attrs.get(StudyAttr.CONFIRMATION) or {}
    if check.get("trial") == best.number:
        confirmed = (f"{'yes' if check.get('confirmed') else 'no'} (re-run from scratch with "
                     f"seed {check.get('seed')}: best val_loss {fmt(check.get('value'), '.6g')}, "
                     f"{check.get('divergences', 0)} divergence(s))")
    else:
        confirmed = "not checked"
    changes = changes_of(attrs.get(TrialAttr.EVENTS, []))
    scores = held_out_scores(study.user_attrs, best)
    lines = [
        f"autotune: winner of study {excerpt(study.study_name)}"
        + (f" ({mask_url(storage)})" if storage else ""),
        f"trial {best.number}: best val_loss {fmt(best.value, '.6g')} at epoch "
        f"{attrs.get(TrialAttr.BEST_EPOCH)}",
        f"recoveries: {attrs.get(TrialAttr.RECOVERIES, 0)}; changes: "
        + describe_changes(changes),
        "sampled: " + ", ".join(f"{k}={fmt(v, '.6g')}" for k, v in best.params.items()),
        f"confirmed: {confirmed}",
        *([f"held-out test pairs: pass@2 {fmt(scores['test_pass2'], '.3f')}, pass@1 "
           f"{fmt(scores.get('test_pass1'), '.3f')}; copying the input "
           f"{fmt(scores.get('test_copy_pass'), '.3f')}"] if "test_pass2" in scores else []),
        f"exported {time.strftime('%Y-%m-%d %H:%M:%S')}; use: {use}",
    ]
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.safe_dump(mapping, sort_keys=False)


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return str(value)
    return value


def _our_columns(trial: FrozenTrial, names: list[str],
                 scores: dict[str, float]) -> dict[str, Any]:
    attrs = trial.user_attrs
    effective = attrs.get(TrialAttr.EFFECTIVE_CONFIG) or {}
    row: dict[str, Any] = {f"effective_{k}": _cell(effective.get(k)) for k in names}
    divergences = attrs.get(TrialAttr.DIVERGENCES)
    row.update({
        "recoveries": attrs.get(TrialAttr.RECOVERIES),
        "diverged": None if divergences is None else bool(divergences),
        "stable": attrs.get(TrialAttr.STABLE), "divergences": divergences,
        "status": attrs.get(TrialAttr.STATUS), "pruned_reason": attrs.get(TrialAttr.PRUNED_REASON),
        "retry_of": attrs.get(TrialAttr.RETRY_OF), "credit_of": attrs.get(TrialAttr.CREDIT_OF),
        "test_pass2": scores.get("test_pass2"), "test_pass1": scores.get("test_pass1"),
        "test_copy_pass": scores.get("test_copy_pass"),
        "run_dir": attrs.get(TrialAttr.RUN_DIR)})
    return row


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: Optuna's `trials_dataframe` and our columns (number, state,
    value, duration_s, param_*, effective_*, recoveries, diverged, stable, ...). Surplus
    trials (never run: a race for the last slot) are left out."""
    trials = [t for t in study.get_trials(deepcopy=False)
              if not (t.state == TrialState.FAIL and t.user_attrs.get(TrialAttr.SURPLUS))]
    keep = {t.number for t in trials}
    frame = study.trials_dataframe(attrs=("number", "value", "datetime_start",
                                          "datetime_complete", "duration", "params",
                                          "state"))
    if frame.empty:
        frame = pd.DataFrame({"number": pd.Series(dtype=int)})
    frame = frame[frame["number"].isin(keep)].reset_index(drop=True)
    frame = frame.rename(columns={c: "param_" + c[len("params_"):] for c in frame.columns
                                  if c.startswith("params_")})
    params = [c[len("param_"):] for c in frame.columns if c.startswith("param_")]
    changed = sorted({k for t in trials
                      for k in changes_of(t.user_attrs.get(TrialAttr.EVENTS, []))}
                     - set(params))
    names = params + changed
    attrs = study.user_attrs
    ours = pd.DataFrame([{"number": t.number,
                          **_our_columns(t, names, held_out_scores(attrs, t))}
                         for t in trials],
                        columns=["number", *[f"effective_{k}" for k in names], *OURS])
    frame = frame.merge(ours, on="number", how="left")
    if "duration" in frame.columns:
        frame["duration_s"] = frame["duration"].dt.total_seconds()
    else:
        frame["duration_s"] = math.nan
    for column in ("state", "value"):
        if column not in frame.columns:
            frame[column] = None
    frame["state"] = frame["state"].astype(object)
    first = FIRST + [f"param_{k}" for k in params] + [f"effective_{k}" for k in names] + OURS
    rest = [c for c in frame.columns if c not in first]
    return frame[first + rest]


def export_csv(study: optuna.Study) -> str:
    """The trials as CSV text."""
    buffer = io.StringIO()
    trials_frame(study).to_csv(buffer, index=False)
    return buffer.getvalue()


def export(study: optuna.Study, format_: str, storage: str = "") -> str:
    """The study in `format_` (yaml or csv) as text."""
    if format_ not in FORMATS:
        raise ConfigError(f"--format must be yaml or csv but got {excerpt(format_)}.")
    return export_yaml(study, storage) if format_ == "yaml" else export_csv(study)
