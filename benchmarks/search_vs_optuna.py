"""Plain Optuna against autotune: same trainer, same space, same seeds, same wall budget.

Plain Optuna is what a user writes by hand: TPE and the median pruner, a training loop
that reports the validation loss each epoch; a NaN loss raises, so the trial FAILS (and
TPE ignores it); nothing is recovered. Its trials that sit at the colour-frequency level
(autotune's collapse detector, run as a bystander) count as diverged in the report, and
are left to run on, as plain Optuna would. autotune runs `autotune search` (through its
library, without the winner's re-check, which is not part of the search budget).

For each seed, both get the same wall budget (no trial starts after it) and the same
trial cap. Reported per seed: the best stable validation loss (a stable trial finished
with its final loss within `max_loss_increase` of its best, no NaN), trials run, trials
that diverged, trials salvaged (diverged, then ended stable), and seconds of compute
spent in diverged trials (and, of those, wasted: not salvaged).

    python benchmarks/search_vs_optuna.py --budget 120         # 3 seeds x 2 x 120 s
    python benchmarks/search_vs_optuna.py --budget 20 --seeds 0 1 2  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from autotune.detect import DetectorConfig, check_collapse
from autotune.recovery.settings import SupervisorConfig
from autotune.search import SearchSettings, prepare, run_search
from autotune.search.space import Space, load_space
from trainer.config import TrainConfig
from trainer.data import ArcData, build_data
from trainer.loop import Diverged, Trainer


@dataclass
class Side:
    """One tool's result on one seed."""

    tool: str
    seed: int
    best_stable: float
    trials: int
    diverged: int
    salvaged: int
    diverged_s: float
    wasted_s: float
    wall_s: float


def _duration(t: optuna.trial.FrozenTrial) -> float:
    return t.duration.total_seconds() if t.duration is not None else 0.0


def plain_optuna(space: Space, seed: int, budget: float, trials: int, epochs: int | None,
                 data_cache: dict[str, ArcData]) -> Side:
    """TPE + median pruner, a NaN trial fails, no recovery."""
    startup = max(3, min(10, trials // 3))
    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
    overrides = {"epochs": epochs} if epochs else {}

    def objective(trial: optuna.Trial) -> float:
        config: TrainConfig = space.config(space.suggest(trial), "tiny",
                                           dict(overrides))
        key = f"{config.max_tasks}/{config.max_grid}"
        data = data_cache.setdefault(key, build_data(config))
        trainer = Trainer(config, data, "cpu")
        # Plain Optuna acts on nothing but NaN; the collapse detector only counts here which
        # of its trials sat at the colour-frequency level (diverged, in autotune's terms).
        watch = DetectorConfig(max_loss_increase=1e9, marginal_loss=trainer.marginal_loss,
                               train_marginal_loss=trainer.train_marginal_loss,
                               warmup_epochs=config.warmup_epochs)
        values: list[float] = []
        history: list[dict[str, float]] = []
        for epoch in range(1, config.epochs + 1):
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
            if check_collapse(history, watch):
                trial.set_user_attr("diverged", True)  # stuck, and left to run on
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        best = min(values)
        unstable = values[-1] > best + SupervisorConfig().max_loss_increase
        collapsed = bool(trial.user_attrs.get("diverged"))
        trial.set_user_attr("diverged", unstable or collapsed)
        trial.set_user_attr("stable", not unstable)
        return best

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials, timeout=budget, catch=(Diverged,))
    wall = time.perf_counter() - start
    done = study.get_trials(deepcopy=False)
    stable = [t.value for t in done if t.state == TrialState.COMPLETE
              and t.user_attrs.get("stable") and t.value is not None]
    diverged = [t for t in done if t.user_attrs.get("diverged")]
    spent = sum(_duration(t) for t in diverged)
    return Side("optuna", seed, min(stable, default=math.inf), len(done), len(diverged), 0,
                spent, spent, wall)


def autotune_search(space_name: str, seed: int, budget: float, trials: int,
                    epochs: int | None, folder: Path) -> Side:
    """`autotune search` on the same space, seed, budget and cap."""
    settings = SearchSettings(study=f"bench-{seed}", storage=f"sqlite:///{folder}/b.db",
                              trials=trials, space=space_name, profile="tiny", epochs=epochs,
                              timeout=budget, seed=seed, artifacts=str(folder / f"a{seed}"))
    start = time.perf_counter()
    plan = prepare(settings)
    outcome = run_search(plan, timeout=budget, confirm_winner=False)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=plan.study, storage=plan.storage)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    diverged = [t for t in done if t.user_attrs.get("divergences")]
    salvaged = [t for t in diverged if t.user_attrs.get("stable")]
    best = outcome.winner.value if outcome.winner else math.inf
    return Side("autotune", seed, best, len(done), len(diverged), len(salvaged),
                sum(_duration(t) for t in diverged),
                sum(_duration(t) for t in diverged if not t.user_attrs.get("stable")), wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=90.0,
                        help="wall seconds per tool and seed (no trial starts after it)")
    parser.add_argument("--trials", type=int, default=30, help="trial cap per run")
    parser.add_argument("--space", default="aggressive_lr")
    parser.add_argument("--epochs", type=int, default=None, help="override the space's")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    space = load_space(args.space)
    data_cache: dict[str, ArcData] = {}
    rows: list[Side] = []
    with tempfile.TemporaryDirectory(prefix="autotune-bench-") as tmp:
        for seed in args.seeds:
            rows.append(plain_optuna(space, seed, args.budget, args.trials, args.epochs,
                                     data_cache))
            rows.append(autotune_search(args.space, seed, args.budget, args.trials,
                                        args.epochs, Path(tmp)))
            for side in rows[-2:]:
                print(f"seed {side.seed} {side.tool:8s} best stable {side.best_stable:.4f}  "
                      f"trials {side.trials:3d}  diverged {side.diverged:2d}  salvaged "
                      f"{side.salvaged:2d}  diverged compute {side.diverged_s:6.1f} s "
                      f"(wasted {side.wasted_s:6.1f} s)  wall {side.wall_s:6.1f} s",
                      flush=True)
    wins = sum(a.best_stable < o.best_stable for o, a in zip(rows[::2], rows[1::2]))
    print(f"autotune better in {wins} of {len(args.seeds)} seeds "
          f"(space {args.space}, budget {args.budget:g} s, cap {args.trials} trials)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
