"""The `search`, `export` and `report` commands and `resume --study`: parse, call, render.

`register(app, console)` adds the commands to the `autotune` typer app; `resume_study` is
what `autotune resume --study NAME` calls. Exit codes: 0 done, 2 bad input, 3 no trial
ended stable, 130 interrupted (the study is saved; `autotune resume --study` continues).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import optuna
import typer
from optuna.exceptions import ExperimentalWarning
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from autotune.cli.progress import describe_event
from autotune.cli.text import esc, path_of
from autotune.errors import ConfigError, excerpt
from autotune.events import describe_changes, fmt
from autotune.search.outcome import SearchOutcome, resume, run_search, safe_sink
from autotune.search.study.packing import Packing
from autotune.search.study.plan import DEFAULT_STUDY, SearchSettings, StudyPlan, prepare
from autotune.search.study.storage import load_study, mask_url, storage_files, storage_url
from autotune.search.vocabulary import SearchEvent, SearchEventKind, TriageChoice

__all__ = ["SearchProgress", "register", "render_outcome", "resume_study"]


def _f4(value: Any) -> str:
    return fmt(value, ".4f")

EXIT_OK, EXIT_NO_STABLE = 0, 3


def _jobs_text(plan: StudyPlan) -> str:
    """"7 jobs (60.2 GiB free / 7.7 GiB a trial, cap 8)": how many trials at once, and why."""
    return Packing(plan.jobs, plan.jobs_reason).describe() if plan.jobs_reason \
        else f"{plan.jobs} job(s)"


def _quiet_optuna() -> None:
    # The progress display says what Optuna's per-trial log lines would.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", ExperimentalWarning)


class SearchProgress:
    """Trials done / total, best value, the current trial's epoch and validation loss,
    diverged and recovered counts; one log line per trial and per recovery."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}  {task.fields[current]}  "
                       "diverged {task.fields[diverged]}  recovered {task.fields[recovered]}"),
            TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("search", total=None, best="-", current="",
                                           diverged=0, recovered=0)

    def __enter__(self) -> SearchProgress:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def __call__(self, event: SearchEvent) -> None:
        render = RENDERERS.get(event.kind)  # kinds without a renderer (error) show nothing
        if render is not None:
            render(self, event.trial, event.data)

    def log(self, text: str) -> None:
        self.console.log(text)

    def show(self, **fields: Any) -> None:
        self.progress.update(self.task, **fields)


# -- one renderer per search event kind ----------------------------------------------------

Renderer = Callable[[SearchProgress, int | None, dict[str, Any]], None]


def _tally(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    p.show(total=d["total"], completed=d["done"], best=_f4(d["best_value"]),
           diverged=d["diverged"], recovered=d["recovered"])


def _trial_start(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    params = ", ".join(f"{k}={fmt(v)}" for k, v in d["params"].items())
    how = "continues its run from the last checkpoint" if d.get("resumed") else "starts"
    p.log(f"trial {n} {how}: {esc(params or '(no searched parameters)')}")
    p.show(current=f"trial {n} starting")


def _epoch(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    p.show(current=f"trial {n} epoch {d['epoch']}/{d.get('epochs') or '?'} "
                   f"val {_f4(d['val_loss'])}")


def _recovery(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    p.log(f"trial {n}: {describe_event(d)}")


def _triage(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    verb = ("recovers" if d["choice"] == TriageChoice.RECOVER
            else "is pruned instead of recovered")
    p.log(f"trial {n} {verb} ({esc(d['divergence'])}, rollback to epoch {d['epoch']}): "
          f"{esc(d['why'])}")


def _trial_end(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    extra = ""
    if d.get("recoveries"):
        extra = f"; {d['recoveries']} recovery(ies): {esc(describe_changes(d['changes']))}"
        credit = d.get("credit") or {}
        if credit.get("enqueued"):
            extra += "; its effective parameters are queued as a new trial"
        elif credit.get("stand_in"):
            extra += "; the sampler sees its effective parameters with this value"
    if d["state"] == "COMPLETE":
        p.log(f"trial {n}: val_loss {_f4(d['value'])}{extra}")
    else:
        p.log(f"trial {n}: pruned ({esc(d.get('reason'))}){extra}")


def _taken(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    # This worker hung and its trial went to another.
    p.log(esc(d.get("message") or f"trial {n} was taken over by another worker"))


def _retry(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    p.log(f"trial {n} was interrupted or its process is gone: re-queued to continue "
          f"from its last checkpoint")


def _confirm_start(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    seed = (f"with seed {d['seed']}" if d.get("seed") is not None
            else "(its configuration has no seed)")
    p.log(f"re-checking trial {n} from scratch {seed} ...")
    p.show(current=f"re-check of trial {n}")


def _confirm_end(p: SearchProgress, n: int | None, d: dict[str, Any]) -> None:
    verdict = "[green]confirmed[/]" if d["confirmed"] else "[red]NOT confirmed[/]"
    p.log(f"re-check of trial {n}: {verdict} (best val_loss {_f4(d['value'])}, "
          f"{d['divergences']} divergence(s))")


RENDERERS: dict[SearchEventKind, Renderer] = {
    SearchEventKind.TALLY: _tally,
    SearchEventKind.TRIAL_START: _trial_start,
    SearchEventKind.EPOCH: _epoch,
    SearchEventKind.RECOVERY: _recovery,
    SearchEventKind.TRIAGE: _triage,
    SearchEventKind.TRIAL_END: _trial_end,
    SearchEventKind.TAKEN: _taken,
    SearchEventKind.RETRY: _retry,
    SearchEventKind.CONFIRM_START: _confirm_start,
    SearchEventKind.CONFIRM_END: _confirm_end,
}
"""How the progress display shows each kind; `error` events end a worker and are raised by
`run_search` instead."""


def render_outcome(console: Console, outcome: SearchOutcome) -> int:
    """The end of a search: the surviving stable configuration and its exit code."""
    t = outcome.tally
    bound = (" (timeout)" if outcome.timed_out
             else " (epoch budget spent)" if outcome.budget_spent else "")
    console.print(f"study {esc(outcome.study)}: {t.done}/{t.total} trials finished{bound}, "
                  f"{outcome.epochs_trained} epochs trained; {t.diverged} diverged, "
                  f"{t.recovered} salvaged by recovery, {t.gave_up} gave up, {t.pruned} "
                  f"pruned.")
    if outcome.salvage is not None and outcome.salvage.diverged:
        console.print(f"  {outcome.salvage.describe()}", markup=False, highlight=False)
    w = outcome.winner
    if w is None:
        if t.done == 0:
            console.print("[red]no trial finished[/]: give a longer --timeout, or continue "
                          f"with `autotune resume --study {esc(outcome.study)}`.")
        else:
            console.print("[red]no trial ended stable[/]: try a narrower space (lower "
                          "learning rates) or more recoveries (max_recoveries).")
        return EXIT_NO_STABLE
    console.print(f"best stable trial: {w.number}, val_loss {w.value:.4f}")
    sampled = ", ".join(f"{k}={fmt(v)}"
                        for k, v in w.params.items())
    console.print(f"  sampled: {esc(sampled or '(none)')}")
    console.print(f"  recovery changed: {describe_changes(w.changes)}", markup=False)
    if "test_pass2" in w.scores:
        console.print(f"  held-out test pairs: pass@2 {w.scores['test_pass2']:.3f}, pass@1 "
                      f"{w.scores.get('test_pass1', math.nan):.3f}; copying the input "
                      f"{w.scores.get('test_copy_pass', math.nan):.3f}")
    if w.confirmed is None:
        console.print("  re-check from scratch: not run")
    else:
        verdict = "[green]confirmed stable[/]" if w.confirmed else "[red]NOT confirmed[/]"
        console.print(f"  re-check from scratch: {verdict} (best val_loss "
                      f"{_f4(w.confirm_value)})")
    console.print(f"  export it: autotune export --study {esc(outcome.study)} --format yaml "
                  f"--output best.yaml")
    return EXIT_OK


def resume_study(console: Console, study: str, storage: str | None) -> int:
    """`autotune resume --study NAME`: continue an interrupted study to its requested
    number of trials, retrying killed trials from their last checkpoint."""
    _quiet_optuna()
    console.print(f"resuming study {esc(repr(study))} in "
                  f"{esc(mask_url(storage_url(storage)))}")
    with SearchProgress(console) as progress:
        outcome = resume(study, storage, safe_sink(progress))
    return render_outcome(console, outcome)


def register(app: typer.Typer, console: Console) -> None:
    """Add `search`, `export` and `report` to the app."""

    @app.command("search")
    def search(
        trials: Annotated[int | None, typer.Option(
            min=1, help="trials to finish (default 30, or the study's)")] = None,
        study: Annotated[str, typer.Option(help="study name")] = DEFAULT_STUDY,
        storage: Annotated[str | None, typer.Option(
            help="storage URL (default sqlite:///studies/autotune.db)")] = None,
        space: Annotated[str | None, typer.Option(
            help="search space YAML, or a shipped one by name (default, aggressive_lr, "
                 "lr_only)")] = None,
        profile: Annotated[str | None, typer.Option(
            help="tiny, default or large (default: tiny on CPU, default on CUDA)")] = None,
        epochs: Annotated[int | None, typer.Option(
            min=1, help="epochs per trial (overrides the space's)")] = None,
        timeout: Annotated[float | None, typer.Option(
            min=0.001, help="start no trial after this many seconds")] = None,
        seed: Annotated[int | None, typer.Option(
            min=0, help="seed of the sampler (reproducible sampling)")] = None,
        jobs: Annotated[int | None, typer.Option(
            min=1, help="trials at once, in processes sharing the cores and the device "
                        "(default: 1 on a CPU; on CUDA as many as fit in its free memory, "
                        "at most 8)")] = None,
        artifacts: Annotated[str | None, typer.Option(
            help="folder of the trials' run directories (default "
                 "studies/artifacts/STUDY; a shared path on many machines)")] = None,
        recovery: Annotated[str | None, typer.Option(
            help="on (recover diverging trials; the default) or off (prune them with the "
                 "reason, recover nothing)")] = None,
        trainer: Annotated[str | None, typer.Option(
            help="MODULE:FACTORY: search your own trainer; FACTORY(hparams: dict) returns an "
                 "autotune.Trainable, the --space keys are its hyperparameters (MODULE from "
                 "the current folder or PYTHONPATH)")] = None,
        held_out: Annotated[str | None, typer.Option(
            help="winner (score the winner on ARC's held-out test pairs after the search; "
                 "the default) or all (every stable trial as it ends: about a second "
                 "each on the tiny profile)")] = None,
        budget_epochs: Annotated[int | None, typer.Option(
            "--budget-epochs", min=1,
            help="start no trial once the study's trials trained this many epochs in all "
                 "(epochs replayed after a rollback count; the winner's re-check does "
                 "not); with --trials and --timeout, whichever binds first")] = None,
    ) -> None:
        """Search hyperparameters; diverging trials are recovered, not thrown away."""
        _quiet_optuna()
        settings = SearchSettings(study=study, storage=storage, trials=trials, space=space,
                                  profile=profile, epochs=epochs, timeout=timeout, seed=seed,
                                  jobs=jobs, artifacts=artifacts, recovery=recovery,
                                  trainer=trainer, held_out=held_out,
                                  budget_epochs=budget_epochs)
        plan = prepare(settings)
        budget = (f" (or {plan.budget_epochs} epochs)" if plan.budget_epochs is not None
                  else "")
        what = (f"trainer {esc(str(plan.trainer))}" if plan.kind != "arc"
                else f"profile {plan.profile}")
        console.print(f"study {esc(repr(plan.study))}: {plan.trials} trials{budget}, {what}, "
                      f"{_jobs_text(plan)}, recovery {plan.recovery}; storage "
                      f"{esc(mask_url(plan.storage))}; runs in {esc(plan.artifacts)}")
        with SearchProgress(console) as progress:
            outcome = run_search(plan, safe_sink(progress), timeout)
        raise typer.Exit(render_outcome(console, outcome))

    @app.command("export")
    def export(
        format_: Annotated[str, typer.Option("--format", help="yaml or csv")],
        study: Annotated[str, typer.Option(help="study name")] = DEFAULT_STUDY,
        storage: Annotated[str | None, typer.Option(help="storage URL")] = None,
        output: Annotated[Path | None, typer.Option(
            help="file to write (default: standard output)")] = None,
    ) -> None:
        """Export the winner's configuration (yaml) or every trial (csv)."""
        from autotune.report import export as exporter

        if format_ not in exporter.FORMATS:
            raise ConfigError(f"--format must be yaml or csv but got {excerpt(format_)}.")
        own = storage_files(storage)
        exporter.check_output(output, own)
        loaded = load_study(study, storage)
        try:
            text = exporter.export(loaded, format_, mask_url(storage_url(storage)))
        except exporter.NoWinner as exc:
            Console(stderr=True).print(f"autotune: {exc}", markup=False, highlight=False,
                                       soft_wrap=True)
            raise typer.Exit(EXIT_NO_STABLE) from None
        if output is None:
            typer.echo(text, nl=False)
        else:
            exporter.write_output(text, output, own)
            console.print(f"wrote {esc(output)}")

    @app.command("report")
    def report(
        study: Annotated[str, typer.Option(help="study name")] = DEFAULT_STUDY,
        storage: Annotated[str | None, typer.Option(help="storage URL")] = None,
        out: Annotated[str | None, typer.Option(
            help="folder for the PNG plots (created)")] = None,
    ) -> None:
        """Show the top trials and what recovery changed; plot into --out."""
        from autotune.report.plots import top_table, write_plots

        _quiet_optuna()
        loaded = load_study(study, storage)
        console.print(top_table(loaded))
        if out is None:
            console.print("plots: give --out DIR")
            return
        plots = write_plots(loaded, path_of(out, "--out"))
        for path in plots.written:
            console.print(f"wrote {esc(path)}")
        for name, why in plots.skipped.items():
            console.print(f"skipped {name}: {why}", markup=False)
