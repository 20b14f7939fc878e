"""What the search tests share: a small space (4 optimizer steps an epoch) and the storage."""

from __future__ import annotations

import optuna

STORAGE = "sqlite:///studies/autotune.db"  # the default, under the test's working folder
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "label_smoothing": {"choices": [0.0, 0.1]},
         "epochs": 2, "max_tasks": 40}


def stored_study(name: str) -> optuna.Study:
    """A study of the default storage, as a user's own script would load it."""
    return optuna.load_study(study_name=name, storage=STORAGE)
