"""Report a study: a table of the top trials with what recovery changed, and PNG plots.

Plots (matplotlib, Agg backend): `history.png` (Optuna's optimisation history),
`curves.png` (every trial's validation loss over epochs of compute, a marker where it
rolled back and what changed), `importances.png` (Optuna's parameter importances). All
of it is read from the storage, so a report works on any machine that reaches it.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from rich.console import JustifyMethod  # noqa: E402
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from autotune.events import EventKind, changes_of, describe_changes, fmt  # noqa: E402
from autotune.search.tally import held_out_scores, winner_of  # noqa: E402
from autotune.search.vocabulary import StudyAttr, TrialAttr  # noqa: E402
from autotune.errors import ConfigError, quote_path  # noqa: E402

__all__ = ["Plots", "top_table", "top_trials", "write_plots"]


def top_trials(study: optuna.Study, k: int = 10) -> list[FrozenTrial]:
    """The best `k` complete trials, best first."""
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.COMPLETE and t.value is not None]
    return sorted(done, key=lambda t: (t.value, t.number))[:k]


def top_table(study: optuna.Study, k: int = 10) -> Table:
    """A rich table of the top trials: value, stability, recoveries, effective changes."""
    trials = study.get_trials(deepcopy=False)
    best = winner_of(trials)
    check = study.user_attrs.get(StudyAttr.CONFIRMATION) or {}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    diverged = [t for t in finished if t.user_attrs.get(TrialAttr.DIVERGENCES)]
    salvaged = sum(bool(t.user_attrs.get(TrialAttr.STABLE)) for t in diverged)
    table = Table(title=Text(f"study {study.study_name}: {len(finished)} trials finished, "
                             f"{len(diverged)} diverged, {salvaged} salvaged"))
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("trial", "right"), ("val_loss", "right"), ("pass@2", "right"), ("stable", "center"),
        ("recoveries", "right"), ("sampled", "left"), ("what recovery changed", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for t in top_trials(study, k):
        mark = ""
        if best is not None and t.number == best.number:
            mark = " *"
            if check.get("trial") == t.number:
                mark += " confirmed" if check.get("confirmed") else " NOT confirmed"
        cells = (f"{t.number}{mark}", f"{t.value:.4f}",
                      fmt(held_out_scores(study.user_attrs, t).get("test_pass2"), ".3f"),
                      "yes" if t.user_attrs.get(TrialAttr.STABLE, True) else "no",
                      str(t.user_attrs.get(TrialAttr.RECOVERIES, 0)),
                      ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in t.params.items()),
                      describe_changes(changes_of(t.user_attrs.get(TrialAttr.EVENTS, []))))
        table.add_row(*(Text(c) for c in cells))  # text, never markup
    return table


@dataclass
class Plots:
    """What `write_plots` wrote, and what it left out and why."""

    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _save(ax: Any, path: Path, plots: Plots) -> None:
    fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    fig.set_size_inches(9, 5.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    plots.written.append(path)


def _curves(study: optuna.Study, path: Path, plots: Plots, limit: int = 40) -> None:
    trials = [t for t in study.get_trials(deepcopy=False) if t.intermediate_values
              and not t.user_attrs.get(TrialAttr.SURPLUS)][-limit:]
    if not trials:
        plots.skipped[path.name] = "no trial reported a validation loss yet"
        return
    fig, ax = plt.subplots()
    for t in trials:
        steps = sorted(t.intermediate_values)
        values = [t.intermediate_values[s] for s in steps]
        rollbacks = [e for e in t.user_attrs.get(TrialAttr.EVENTS, [])
                     if e.get("kind") == EventKind.RECOVERED]
        cuts = sorted({int(e.get("global_epoch") or 0) for e in rollbacks})
        style = "-" if t.state == TrialState.COMPLETE else ":"
        color = None
        # One line per timeline: a rollback starts a new one.
        for start, end in zip([-1, *cuts], [*cuts, math.inf]):
            seg = [(s, v) for s, v in zip(steps, values) if start < s <= end]
            if not seg:
                continue
            (line,) = ax.plot([p[0] for p in seg], [p[1] for p in seg], style, marker=".",
                              linewidth=1, color=color,
                              label=f"trial {t.number}" if color is None else None)
            color = line.get_color()
        for event in rollbacks:
            g = int(event.get("global_epoch") or 0)
            before = [v for s, v in zip(steps, values) if s <= g]
            y = before[-1] if before else values[0]
            ax.plot([g], [y], marker="X", markersize=9, color="red", linestyle="none")
            after = [(s, v) for s, v in zip(steps, values) if s > g]
            if after:  # the resumed timeline continues from the rollback
                ax.plot([g, after[0][0]], [y, after[0][1]], ":", linewidth=1, color=color)
            ax.annotate(f"#{t.number} back to epoch {event.get('rolled_back_to')}: "
                        f"{describe_changes(event.get('changes', {}))}", (g, y),
                        textcoords="offset points", xytext=(4, 6), fontsize=7, color=color)
    finite = [v for t in trials for v in t.intermediate_values.values() if math.isfinite(v)]
    if finite:  # a blown-up value should not flatten every other curve
        low, high = min(finite), max(finite)
        if high - low > 5 * (statistics.median(finite) - low + 1e-9):
            high = sorted(finite)[int(0.95 * (len(finite) - 1))]
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set_xlabel("epochs of compute (global epoch)")
    ax.set_ylabel("validation loss (no smoothing)")
    ax.set_title(f"study {study.study_name}: validation loss per trial; X = rollback")
    if len(trials) <= 12:
        ax.legend(fontsize=7)
    _save(ax, path, plots)


def write_plots(study: optuna.Study, out: Path) -> Plots:
    """Write history.png, curves.png and importances.png into `out` (created)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {quote_path(out)} is a file; give a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {quote_path(out)} cannot be created: {exc.strerror}.") from None
    plots = Plots()
    vis = optuna.visualization.matplotlib
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        if complete:
            _save(vis.plot_optimization_history(study), out / "history.png", plots)
        else:
            plots.skipped["history.png"] = "no complete trial"
        _curves(study, out / "curves.png", plots)
        if len(complete) < 2:
            plots.skipped["importances.png"] = "needs at least 2 complete trials"
            return plots
        try:
            _save(vis.plot_param_importances(study), out / "importances.png", plots)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            plots.skipped["importances.png"] = f"not computable yet ({exc})"
            plt.close("all")
    return plots
