"""Plain Optuna against autotune with recovery off and on: same trainer, space, seeds, budget.

    python benchmarks/search_vs_optuna.py --space FILE_OR_NAME --seeds S... --budget SECONDS
           [--budget-epochs N] [--epochs N] [--inject SPEC] [--arms plain,off,on]
           --json OUT [--plot PNG]

Arms (the contract's benchmark interface):
- `plain`: Optuna as users write it: TPE and the median pruner (startup 5 trials, warmup 2
  epochs), a loop that reports the validation loss each epoch; a NaN loss raises, so the
  trial FAILS (TPE ignores it); nothing is recovered. Its trials that sit at the
  colour-frequency level (autotune's collapse detector, run as a bystander) count as
  diverged, and run on, as plain Optuna would let them.
- `off`: `autotune search --recovery off`: the strong baseline (a divergence is caught
  and the trial pruned with its reason; the sampler learns from it).
- `on`: `autotune search` (recovery, with the recover-or-prune triage).

Pairing: seed S gives every arm the sampler seed S, the trial seed S (the space's `seed`
is fixed to S) and the same `AUTOTUNE_INJECT` fault stream per trial number, so the arms
draw the same trials until the first intervention. Every arm has the same trial cap and
wall budget (no trial starts after it), runs on one core of its own (one thread), two
arms at a time; a cap that binds before the budget makes every row repeatable bit for bit
whatever the machine's load (the rows say whether the budget bound: `timed_out`).

With `--budget-epochs N` every arm also starts no trial once its trials trained N epochs
of compute in all (every epoch trained counts: replays after a rollback, a partial epoch
that diverged), so the arms compare at equal compute; `epochs` in each row says what each
spent (the trial that crossed the budget finishes, so an arm can end a little above N).

Each row: `seed`, `arm`, `best_stable` (best validation loss of a trial that ended stable:
complete, final loss within `max_loss_increase` of its best, no NaN; inf if none),
`trials`, `diverged` (trials with a divergence; for plain, a NaN or a collapse),
`salvaged` (diverged, then ended stable), `wasted_s` (compute of diverged trials that did
not end stable), `wall_s`, and `curve` ([[seconds, best stable so far], ...]). The summary
(`benchmarks/paired.py`) gives per arm the mean and median, and `on` against each
baseline: wins / ties / losses, mean difference and its standard error, the Wilcoxon
signed-rank p-value.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired  # noqa: E402  (benchmarks/paired.py)

ARMS = ("plain", "off", "on")


@dataclass
class Row:
    """One arm's search on one seed."""

    seed: int
    arm: str
    best_stable: float
    trials: int
    diverged: int
    salvaged: int
    wasted_s: float
    wall_s: float
    curve: list[list[float]] = field(default_factory=list)
    diverged_s: float = 0.0
    timed_out: bool = False
    triage: dict[str, int] = field(default_factory=dict)
    """on: recover-or-prune choices taken."""
    epochs: int = 0
    """Epochs of compute the search's trials trained in all (replays after a rollback
    included, a partial epoch that diverged included)."""
    budget_spent: bool = False
    """The epoch budget (`--budget-epochs`) bound before the trial cap."""


def _duration(t: FrozenTrial) -> float:
    return t.duration.total_seconds() if t.duration is not None else 0.0


def _curve(trials: list[FrozenTrial], start: float) -> list[list[float]]:
    """[[seconds since the start, best stable so far], ...] at each stable trial's end."""
    done = sorted((t for t in trials if t.datetime_complete is not None),
                  key=lambda t: t.datetime_complete)
    out, best = [], math.inf
    for t in done:
        if t.state == TrialState.COMPLETE and t.user_attrs.get("stable") and \
                t.value is not None and math.isfinite(t.value) and t.value < best:
            best = t.value
            out.append([round(t.datetime_complete.timestamp() - start, 2), best])
    return out


def space_with_seed(space_arg: str, seed: int, folder: Path) -> Path:
    """The workload's space with the trial seed fixed to `seed`, as a file."""
    from autotune.search.space import load_space

    path = folder / f"space-{seed}.yaml"
    path.write_text(yaml.safe_dump({**load_space(space_arg).to_yaml(), "seed": seed}))
    return path


def plain_optuna(space_file: Path, seed: int, budget: float, trials: int,
                 epochs: int | None, budget_epochs: int | None = None,
                 folder: Path | None = None) -> Row:
    """TPE + median pruner, a NaN trial fails, no recovery. With `budget_epochs`, no trial
    starts once the trials trained that many epochs in all (as `autotune search
    --budget-epochs` counts: every epoch trained, a partial one that diverged included).
    With `folder`, its trials are written to `folder/trials.json` afterwards (the study is
    in memory, as a user's single-process search keeps it)."""
    from autotune.detect import DetectorConfig, check_collapse
    from autotune.recovery.settings import SupervisorConfig
    from autotune.search.arc import data_for
    from autotune.search.space import load_space
    from trainer.inject import Injector
    from trainer.loop import Diverged, Trainer

    space = load_space(space_file)
    startup = max(3, min(10, trials // 3))  # what `autotune search` uses (workers.py)
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
    overrides = {"epochs": epochs} if epochs else {}

    def objective(trial: optuna.Trial) -> float:
        config = space.config(space.suggest(trial), "tiny", dict(overrides))
        data = data_for(config)  # built once per process, as `autotune search` does
        trainer = Trainer(config, data, "cpu", Injector.from_env(config.seed, trial.number))
        watch = DetectorConfig(max_loss_increase=1e9, marginal_loss=trainer.marginal_loss,
                               train_marginal_loss=trainer.train_marginal_loss,
                               warmup_epochs=config.warmup_epochs)
        values: list[float] = []
        history: list[dict[str, float]] = []
        for epoch in range(1, config.epochs + 1):
            trained[0] += 1  # counted as it starts: a partial epoch is compute spent too
            try:
                train = trainer.train_epoch()
            except Diverged:
                trial.set_user_attr("diverged", True)
                raise
            value = trainer.evaluate("val")["val_loss"]
            values.append(value)
            history.append({"epoch": epoch, "train_loss": train["train_loss"],
                            "val_loss": value})
            if not math.isfinite(value):
                trial.set_user_attr("diverged", True)
                raise Diverged("nonfinite_loss", trainer.step)
            if check_collapse(history, watch).diverged:
                trial.set_user_attr("diverged", True)  # stuck, and left to run on
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        best = min(values)
        unstable = values[-1] > best + SupervisorConfig().max_loss_increase
        collapsed = bool(trial.user_attrs.get("diverged"))
        trial.set_user_attr("diverged", unstable or collapsed)
        trial.set_user_attr("stable", not (unstable or collapsed))
        return best

    trained = [0]

    def stop_at_budget(study: optuna.Study, _trial: FrozenTrial) -> None:
        if budget_epochs is not None and trained[0] >= budget_epochs:
            study.stop()

    start = time.time()
    study.optimize(objective, n_trials=trials, timeout=budget, catch=(Diverged,),
                   callbacks=[stop_at_budget])
    wall = time.time() - start
    done = study.get_trials(deepcopy=False)
    if folder is not None:
        (folder / "trials.json").write_text(json.dumps([
            {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "user_attrs": t.user_attrs, "intermediate_values": t.intermediate_values}
            for t in done], indent=1, default=str))
    stable = [t.value for t in done if t.state == TrialState.COMPLETE
              and t.user_attrs.get("stable") and t.value is not None]
    diverged = [t for t in done if t.user_attrs.get("diverged")]
    spent = sum(_duration(t) for t in diverged)
    spent_epochs = budget_epochs is not None and trained[0] >= budget_epochs
    return Row(seed, "plain", min(stable, default=math.inf), len(done), len(diverged), 0,
               spent, wall, _curve(done, start), spent,
               len(done) < trials and not spent_epochs, epochs=trained[0],
               budget_spent=len(done) < trials and spent_epochs)


def autotune_search(space_file: Path, seed: int, budget: float, trials: int,
                    epochs: int | None, folder: Path, recovery: str,
                    budget_epochs: int | None = None) -> Row:
    """`autotune search` (recovery on or off) on the same space, seed, budget and cap."""
    from autotune.search import SearchSettings, prepare, run_search

    name = f"bench-{recovery}-{seed}"
    settings = SearchSettings(study=name, storage=f"sqlite:///{folder}/{name}.db",
                              trials=trials, space=str(space_file), profile="tiny",
                              epochs=epochs, timeout=budget, seed=seed, jobs=1,
                              artifacts=str(folder / name), device="cpu", recovery=recovery,
                              budget_epochs=budget_epochs)
    start = time.time()
    plan = prepare(settings)
    outcome = run_search(plan, timeout=budget, confirm_winner=False)
    wall = time.time() - start
    study = optuna.load_study(study_name=plan.study, storage=plan.storage)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    diverged = [t for t in done if t.user_attrs.get("divergences")]
    salvaged = [t for t in diverged if t.user_attrs.get("stable")]
    choices: dict[str, int] = {}
    for t in done:
        for entry in t.user_attrs.get("triage") or []:
            choices[entry["choice"]] = choices.get(entry["choice"], 0) + 1
    best = outcome.winner.value if outcome.winner else math.inf
    return Row(seed, recovery, best, len(done), len(diverged), len(salvaged),
               sum(_duration(t) for t in diverged if not t.user_attrs.get("stable")), wall,
               _curve(done, start), sum(_duration(t) for t in diverged), outcome.timed_out,
               choices, outcome.epochs_trained, outcome.budget_spent)


# -- running the arms, one core each ------------------------------------------------------

_CORE = None


def _pin(counter: Any) -> None:
    """Pool initializer: this worker process runs on one core of its own, one thread."""
    global _CORE
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    cores = sorted(os.sched_getaffinity(0))
    _CORE = cores[index % len(cores)]
    os.sched_setaffinity(0, {_CORE})
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")


def run_arm(job: tuple[str, str, int, float, int, int | None, str | None, str, int | None]
            ) -> Row:
    arm, space_arg, seed, budget, trials, epochs, inject, folder, budget_epochs = job
    if inject:
        os.environ["AUTOTUNE_INJECT"] = inject
    else:
        os.environ.pop("AUTOTUNE_INJECT", None)
    work = Path(folder) / f"{arm}-{seed}"
    work.mkdir(parents=True, exist_ok=True)
    space_file = space_with_seed(space_arg, seed, work)
    if arm == "plain":
        return plain_optuna(space_file, seed, budget, trials, epochs, budget_epochs, work)
    return autotune_search(space_file, seed, budget, trials, epochs, work, arm, budget_epochs)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """The anytime curve: best stable so far against wall time, averaged over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max((r["wall_s"] for r in rows), default=1.0)
    grid = [end * i / 200 for i in range(201)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, seeds in paired.by_arm(rows).items():
        ax.plot(grid, paired.mean_curve([r["curve"] for r in seeds.values()], grid),
                label=f"{arm} ({len(seeds)} seeds)")
    ax.set_xlabel("wall seconds")
    ax.set_ylabel(f"best stable val loss (mean; none yet = ln 12 = {paired.NO_STABLE:.2f})")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for arm, s in paired.summary(rows).items():
        lines.append(f"{arm:5s} mean {s['mean']:.4f} median {s['median']:.4f}  no stable "
                     f"{s['no_stable']}  trials {s['trials']:.0f}  diverged "
                     f"{s['diverged']:.0f}  salvaged {s['salvaged']:.0f}  wasted "
                     f"{s['wasted_s']:.0f} s  wall {s['wall_s']:.0f} s")
    arms = paired.by_arm(rows)
    for baseline in ("off", "plain"):
        if "on" in arms and baseline in arms:
            c = paired.compare(rows, "on", baseline)
            p = "-" if c["p"] is None else f"{c['p']:.3f}"
            lines.append(f"on vs {baseline:5s}: {c['wins']} wins / {c['ties']} ties / "
                         f"{c['losses']} losses of {c['seeds']}; mean difference "
                         f"{c['mean_diff']:+.4f} (se {c['se_diff']:.4f}); Wilcoxon p {p}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True, help="a space file or a shipped name")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--budget", type=float, required=True,
                        help="wall seconds per arm and seed (no trial starts after it)")
    parser.add_argument("--trials", type=int, default=8, help="trial cap per arm and seed")
    parser.add_argument("--budget-epochs", type=int, default=None,
                        help="epochs of compute per arm and seed: no trial starts once the "
                             "trials trained this many (replays after a rollback count)")
    parser.add_argument("--epochs", type=int, default=None, help="override the space's")
    parser.add_argument("--inject", default=None, help="AUTOTUNE_INJECT for every arm")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--procs", type=int, default=2, help="arms run at a time")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None, help="the anytime curve (PNG)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep every arm's study and runs under this folder (ARM-SEED/) "
                             "to read its trials afterwards; a temporary folder otherwise")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        parser.error(f"--arms takes a comma-separated list of {', '.join(ARMS)} "
                     f"but got {args.arms!r}")
    if args.budget_epochs is not None and args.budget_epochs < 1:
        parser.error(f"--budget-epochs must be an integer >= 1 but got {args.budget_epochs}")
    if args.inject:
        from trainer.inject import Injector

        Injector.parse(args.inject)  # a bad spec fails here, before anything runs
    start = time.time()
    rows: list[dict[str, Any]] = []
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        taken = [p.name for p in args.keep.iterdir()]
        if taken:
            parser.error(f"--keep {args.keep} must be empty or new but holds {taken[0]}")
    with (contextlib.nullcontext(str(args.keep)) if args.keep is not None
          else tempfile.TemporaryDirectory(prefix="autotune-bench-")) as tmp:
        # The arms of one seed next to each other in the queue: the machine's drift cancels.
        jobs = [(arm, args.space, seed, args.budget, args.trials, args.epochs, args.inject,
                 tmp, args.budget_epochs) for seed in args.seeds for arm in arms]
        context = mp.get_context("spawn")
        counter = context.Value("i", 0)
        with ProcessPoolExecutor(args.procs, mp_context=context,
                                 initializer=_pin, initargs=(counter,)) as pool:
            for row in pool.map(run_arm, jobs):
                rows.append(asdict(row))
                print(f"seed {row.seed:3d} {row.arm:5s} best stable {row.best_stable:.4f}  "
                      f"trials {row.trials:2d}  diverged {row.diverged:2d}  salvaged "
                      f"{row.salvaged:2d}  wasted {row.wasted_s:6.1f} s  epochs "
                      f"{row.epochs:4d}  wall {row.wall_s:6.1f} s"
                      f"{'  (time budget bound)' if row.timed_out else ''}"
                      f"{'  (epoch budget bound)' if row.budget_spent else ''}"
                      f"{'  triage ' + str(row.triage) if row.triage else ''}", flush=True)
    args.json.write_text(json.dumps(rows, indent=1))
    for line in report(rows):
        print(line)
    epochs = "" if args.budget_epochs is None else f", {args.budget_epochs} epochs"
    print(f"space {args.space}, inject {args.inject or '-'}, budget {args.budget:g} s"
          f"{epochs}, cap {args.trials} trials, {len(args.seeds)} seeds; wall "
          f"{time.time() - start:.0f} s")
    if args.plot:
        plot(rows, args.plot, f"{args.space}, inject {args.inject or '-'}, "
                              f"{len(args.seeds)} seeds, cap {args.trials} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
