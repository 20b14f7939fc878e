"""A study's plan: the flags of `autotune search`, validated, and what the study stores.

A study is created once with its plan (the requested number of trials, the search space,
profile, epochs, artifacts folder) stored in its user attributes, so that any worker and
`autotune resume --study` know what to do from the storage alone.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from autotune.errors import ConfigError, excerpt, quote_path
from autotune.recovery.settings import RecoveryMode
from autotune.search.budget import Budget
from autotune.search.factory import check as check_factory
from autotune.search.objective import (
    ObjectiveSettings,
)
from autotune.search.space import Choice, Space, load_space, parse_space
from autotune.search.study import packing
from autotune.search.study.packing import Packing, choose_jobs, trial_memory
from autotune.search.study.storage import open_storage, storage_url
from autotune.search.vocabulary import StudyAttr
from trainer.config import PROFILES, TrainConfig
from trainer.inject import Injector
from trainer.loop import default_profile

DEFAULT_STUDY = "arc"
DEFAULT_TRIALS = 30
HELD_OUT = ("winner", "all")


@dataclass(frozen=True)
class SearchSettings:
    """The flags of `autotune search`; None means the study's stored value or the default."""

    study: str = DEFAULT_STUDY
    storage: str | None = None
    trials: int | None = None
    space: str | None = None
    profile: str | None = None
    epochs: int | None = None
    timeout: float | None = None
    seed: int | None = None
    jobs: int | None = None
    """None: 1 on a CPU, on CUDA as many trials as fit in its free memory
    (`autotune.search.study.packing`)."""
    artifacts: str | None = None
    device: str = "auto"
    recovery: str | None = None
    """on or off; None: the study's (on for a new one)."""
    trainer: str | None = None
    """MODULE:FACTORY: search a user's trainer (`autotune.search.factory`); None: ARC."""
    held_out: str | None = None
    """winner (score the winner on ARC's held-out pairs, after the search) or all (every
    stable trial as it ends); None: the study's (winner for a new one)."""
    budget_epochs: int | None = None
    """Start no trial once the study's trials trained this many epochs in all
    (`autotune.search.budget`); None: the study's (no budget for a new one)."""

    def __post_init__(self) -> None:
        for name, low in (("trials", 1), ("epochs", 1), ("jobs", 1), ("seed", 0),
                          ("budget_epochs", 1)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < low):
                flag = name.replace("_", "-")
                raise ConfigError(f"--{flag} must be an integer >= {low} but got "
                                  f"{excerpt(value)}.")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"--timeout must be a finite number of seconds > 0 but got "
                              f"{excerpt(self.timeout)}.")
        if self.trainer is not None and self.profile is not None:
            raise ConfigError(f"--profile {excerpt(self.profile)} does not apply with "
                              f"--trainer (profiles size our ARC trainer); drop it.")
        if self.trainer is not None and self.space is None:
            raise ConfigError("--trainer needs --space FILE: a space over the factory's "
                              "hyperparameters.")
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"--profile must be one of {', '.join(PROFILES)} but got "
                              f"{self.profile!r}.")
        if self.recovery is not None and self.recovery not in (RecoveryMode.ON, RecoveryMode.OFF):
            raise ConfigError(f"--recovery must be on or off but got {self.recovery!r}.")
        if self.held_out is not None and self.held_out not in HELD_OUT:
            raise ConfigError(f"--held-out must be winner or all but got {self.held_out!r}.")
        if not self.study or not self.study.strip():
            raise ConfigError("--study must be a non-empty name.")
        check_study_name(self.study)
        check_seed(self.seed, "--seed")
        if self.artifacts is not None:
            check_artifacts(self.artifacts, "--artifacts")
        if self.artifacts is None and (Path(self.study).name != self.study
                                       or self.study in (".", "..")):
            # The default artifacts folder is studies/artifacts/STUDY: never outside it.
            raise ConfigError(f"--study {excerpt(self.study)} would put its runs outside "
                              f"studies/artifacts/; give a name without '/' or '..', or "
                              f"an --artifacts folder.")


SEED_MAX = 2**31 - 1
"""The largest seed (a run's seed too, `trainer.config`; the sampler's stream per worker and
resume is derived from it modulo 2**32)."""


def check_study_name(name: str) -> None:
    """ConfigError for a study name with a control character (a newline, a tab, ...):
    it would break every line that names the study."""
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ConfigError(f"--study {excerpt(name)} holds a control character (a newline, a "
                          f"tab, ...); give a name of printable characters.")


def check_seed(seed: object, what: str) -> None:
    """ConfigError unless `seed` is None or an integer in 0..SEED_MAX."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ConfigError(f"{what} must be an integer >= 0 and <= {SEED_MAX} but got "
                          f"{excerpt(seed)}.")


def check_artifacts(value: str, what: str) -> None:
    """ConfigError unless `value` can be the artifacts folder: not empty, and neither it
    nor a folder above it an existing file."""
    if not value.strip():
        raise ConfigError(f"{what} must be a folder but got {excerpt(value)}.")
    path = Path(value)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"{what} {excerpt(value)} is not a folder: {quote_path(p)} is "
                              f"a file; give a folder.")


@dataclass(frozen=True)
class StudyPlan:
    """What a study was asked to do; stored with it (`StudyAttr.PLAN`) for workers and resume."""

    study: str
    storage: str
    trials: int
    space: dict[str, Any]
    profile: str
    epochs: int | None
    artifacts: str
    seed: int | None = None
    jobs: int = 1
    device: str = "auto"
    recovery: str = RecoveryMode.ON.value
    held_out: str = "winner"
    budget_epochs: int | None = None
    """`--budget-epochs`: no trial starts once the study's trials trained this many epochs."""
    version: int = 1
    kind: str = "arc"
    """What trains (`ObjectiveSettings.kind`): arc, factory (`--trainer`) or build
    (`autotune.objective`)."""
    trainer: str | None = None
    """MODULE:NAME of the factory or build (`autotune.search.factory`)."""
    max_recoveries: int = 4
    jobs_reason: str = field(default="", compare=False)
    """Why `jobs` is what it is (for the startup line); not stored with the study."""

    def space_obj(self) -> Space:
        return parse_space(self.space, f"of study {excerpt(self.study)}",
                           free=self.kind != "arc")

    def objective_settings(self) -> ObjectiveSettings:
        overrides = {"epochs": self.epochs} if self.epochs is not None else {}
        return ObjectiveSettings(self.space_obj(), self.profile, Path(self.artifacts),
                                 overrides, self.device, self.trials,
                                 recovery=RecoveryMode(self.recovery), kind=self.kind,
                                 trainer=self.trainer, max_recoveries=self.max_recoveries,
                                 held_out=self.held_out, budget=Budget(self.budget_epochs))

    def stored(self) -> dict[str, Any]:
        """The plan as a study attribute (the storage URL is not stored: it is where the
        study is, and may hold a password)."""
        out = asdict(self)
        out.pop("storage")
        out.pop("jobs_reason")
        return json.loads(json.dumps(out))

    @classmethod
    def from_stored(cls, attrs: dict[str, Any], study: str, storage: str) -> StudyPlan:
        data = {k: v for k, v in attrs.items() if k in cls.__dataclass_fields__}
        return cls(**{**data, "study": study, "storage": storage})


def stored_plan(study: optuna.Study, url: str | None) -> StudyPlan:
    """The plan stored with `study`, validated: a value an older autotune let in that
    would fail later (a seed out of range, an artifacts folder that is a file) is
    ConfigError naming it, before anything runs."""
    attrs = study.user_attrs.get(StudyAttr.PLAN)
    if not isinstance(attrs, dict):
        raise ConfigError(f"study {excerpt(study.study_name)} was not created by "
                          f"`autotune search` "
                          f"(it has no stored plan), so it cannot be resumed.")
    name = excerpt(study.study_name)
    try:
        plan = StudyPlan.from_stored(attrs, study.study_name, storage_url(url))
    except TypeError as exc:
        raise ConfigError(f"study {name} has a damaged stored plan ({exc}); start a new "
                          f"study.") from None
    try:
        check_seed(plan.seed, "its seed")
        check_artifacts(str(plan.artifacts), "its artifacts folder")
    except ConfigError as exc:
        raise ConfigError(f"study {name} was stored with a bad value: {exc} It cannot run; "
                          f"start a new study (--study) with good values.") from None
    return plan


def _corners(space: Space, profile: str, overrides: dict[str, Any]) -> list[TrainConfig]:
    """The configurations at the space's corners (every parameter low, every one high)."""
    return [space.config({p.key: (p.choices[pick] if isinstance(p, Choice)
                                  else (p.low, p.high)[pick]) for p in space.params},
                         profile, overrides) for pick in (0, -1)]


def _probe(space: Space, profile: str, overrides: dict[str, Any]) -> None:
    """Resolve the configurations at the space's corners, so that a bad combination is
    exit 2 before the study exists; a data path must exist."""
    for config in _corners(space, profile, overrides):
        if config.data not in ("arcagi", "arcagi2") and not Path(config.data).exists():
            raise ConfigError(f"data {excerpt(config.data)} does not exist; give arcagi, "
                              f"arcagi2 or "
                              f"an existing path.")


def _jobs(settings: SearchSettings, space: Space, profile: str,
          overrides: dict[str, Any]) -> Packing:
    """`--jobs`, or its default for the device: on CUDA by the free memory over the need of
    a trial at the space's corners."""
    def need() -> int:
        if not profile:  # a user's trainer (no profile): its need is not known
            return 0
        return max(trial_memory(c).total for c in _corners(space, profile, overrides))

    return choose_jobs(settings.jobs, settings.device, need, packing.cores())


def _joins_own_trainer(study: str, url: str) -> bool:
    """`study` exists in a storage that exists and searches a user's trainer (its space's
    keys are that trainer's, not ARC's). Creates no storage."""
    try:
        storage = open_storage(url, create=False)
        if study not in optuna.get_all_study_names(storage):
            return False
        return stored_plan(optuna.load_study(study_name=study, storage=storage),
                           url).kind == "factory"
    except ConfigError:
        return False


def prepare(settings: SearchSettings) -> StudyPlan:
    """Validate everything, then create the study or join the existing one of that name.

    Joining checks that a given space, profile and epochs agree with the stored plan; a
    larger `--trials` raises the study's target, and a given `--budget-epochs` replaces
    the study's budget (to extend a study that spent it, or to bound one that had none).
    """
    url = storage_url(settings.storage)
    own = settings.trainer is not None
    try:
        space = load_space(settings.space, free=own)
    except ConfigError:
        if own or not _joins_own_trainer(settings.study, url):
            raise
        own = True  # `--study S --space F` continues the study of a user's trainer
        space = load_space(settings.space, free=True)
    if settings.epochs is not None and space.param("epochs") is not None:
        raise ConfigError("--epochs conflicts with the space's epochs range; drop one.")
    overrides = {"epochs": settings.epochs} if settings.epochs is not None else {}
    profile = "" if own else settings.profile or default_profile(settings.device)
    if settings.trainer is not None:
        check_factory(settings.trainer, space, settings.epochs)  # before a trial is spent
    elif not own:
        _probe(space, profile, overrides)
    Injector.from_env()  # a bad AUTOTUNE_INJECT is exit 2 here, not a failed trial each
    storage = open_storage(url)  # the first thing written
    if settings.study in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=settings.study, storage=storage)
        plan = stored_plan(study, url)
        given = json.loads(json.dumps(space.to_yaml())) if settings.space is not None else None
        for flag, mine, theirs in (("--trainer", settings.trainer, plan.trainer),
                                   ("--space", given, plan.space),
                                   ("--profile", settings.profile, plan.profile),
                                   ("--epochs", settings.epochs, plan.epochs),
                                   ("--recovery", settings.recovery, plan.recovery)):
            if mine is not None and mine != theirs:
                raise ConfigError(f"study {excerpt(settings.study)} exists with another "
                                  f"{flag[2:]} "
                                  f"({excerpt(theirs)}); continue it without {flag}, or "
                                  f"use another "
                                  f"--study.")
        if plan.kind == "factory" and plan.trainer is not None:
            check_factory(plan.trainer, plan.space_obj(), plan.epochs)
        trials = max(plan.trials, settings.trials or 0)
        packing = _jobs(settings, plan.space_obj(), plan.profile,
                        {"epochs": plan.epochs} if plan.epochs is not None else {})
        budget = (settings.budget_epochs if settings.budget_epochs is not None
                  else plan.budget_epochs)
        plan = replace(plan, storage=url, trials=trials, budget_epochs=budget,
                       jobs=packing.jobs, jobs_reason=packing.reason, device=settings.device,
                       seed=settings.seed if settings.seed is not None else plan.seed,
                       held_out=settings.held_out or plan.held_out)
        study.set_user_attr(StudyAttr.PLAN, plan.stored())
        return plan
    artifacts = Path(settings.artifacts or Path("studies") / "artifacts" / settings.study)
    packing = _jobs(settings, space, profile, overrides)
    plan = StudyPlan(study=settings.study, storage=url,
                     trials=settings.trials or DEFAULT_TRIALS, space=space.to_yaml(),
                     profile=profile, epochs=settings.epochs,
                     artifacts=str(artifacts.resolve()), seed=settings.seed,
                     jobs=packing.jobs, device=settings.device,
                     recovery=settings.recovery or RecoveryMode.ON.value,
                     jobs_reason=packing.reason, kind="factory" if own else "arc",
                     trainer=settings.trainer, held_out=settings.held_out or "winner",
                     budget_epochs=settings.budget_epochs)
    study = optuna.create_study(study_name=settings.study, storage=storage,
                                direction="minimize", load_if_exists=True)
    if StudyAttr.PLAN not in study.user_attrs:
        study.set_user_attr(StudyAttr.PLAN, plan.stored())
        return plan
    # Another worker created it a moment ago: its plan is the study's.
    return replace(stored_plan(study, url), jobs=packing.jobs, jobs_reason=packing.reason,
                   device=settings.device)
