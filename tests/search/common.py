"""What the search tests share: a small space (4 optimizer steps an epoch) and the storage."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autotune.search.vocabulary import TrialAttr

STORAGE = "sqlite:///studies/autotune.db"  # the default, under the test's working folder
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "label_smoothing": {"choices": [0.0, 0.1]},
         "epochs": 2, "max_tasks": 40}


REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that imports this repository's test modules (a
    user's trainer in a test), from whatever folder it runs in, with `extra` set and no
    fault injection inherited."""
    env = {k: v for k, v in os.environ.items() if k != "AUTOTUNE_INJECT"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return {**env, **extra}


def stored_study(name: str) -> optuna.Study:
    """A study of the default storage, as a user's own script would load it."""
    return optuna.load_study(study_name=name, storage=STORAGE)


def add_trial(study: optuna.Study, values: dict[int, float], *, value: float | None = None,
              timeline: list[list[int]] | None = None,
              state: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    """Add a finished trial with these intermediate values (and `timeline` attribute)."""
    attrs = {TrialAttr.TIMELINE: timeline} if timeline is not None else {}
    trial = optuna.create_trial(state=state, value=value if state == TrialState.COMPLETE
                                else None, intermediate_values=values, user_attrs=attrs)
    study.add_trial(trial)
    return study.get_trials()[-1]
