"""Entries a user would write to search their own trainers: `build(trial)` functions for
`autotune.objective` and `FACTORY(hparams)` functions for `autotune search --trainer`
(importable as `tests.search.own_trainers:NAME`), and broken ones for the exit-2 checks."""

from __future__ import annotations

from typing import Any

import optuna

from tests.recovery.mlp_trainer import MLPTrainer
from tests.search.charlm_trainer import CharLMTrainer


def build_mlp(trial: optuna.Trial) -> MLPTrainer:
    """The README's MLP: the rate from 0.01 (stable) to 0.5 (diverges)."""
    return MLPTrainer(learning_rate=trial.suggest_float("learning_rate", 0.01, 0.5, log=True),
                      grad_clip=0.0)


class OverfittingMLP(MLPTrainer):
    """The MLP whose validation loss climbs by 0.05 an epoch from its fourth evaluation on
    while its training loss goes on falling: overfitting, called at epoch 7 of 8."""

    def __init__(self, **hparams: Any) -> None:
        super().__init__(**hparams)
        self.evaluations = 0

    def evaluate(self) -> dict[str, float]:
        self.evaluations += 1
        return {"val_loss": super().evaluate()["val_loss"]
                + 0.05 * max(0, self.evaluations - 3)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "evaluations": self.evaluations}

    def load_state_dict(self, state: Any) -> None:
        super().load_state_dict(state)
        self.evaluations = int(state["evaluations"])


def build_overfitting(trial: optuna.Trial) -> OverfittingMLP:
    return OverfittingMLP(learning_rate=trial.suggest_float("learning_rate", 0.01, 0.03),
                          epochs=8)


def build_charlm(trial: optuna.Trial) -> CharLMTrainer:
    return CharLMTrainer(learning_rate=trial.suggest_float("learning_rate", 1e-3, 3e-2,
                                                           log=True),
                         width=trial.suggest_categorical("width", [16, 32]))


def charlm(hparams: dict[str, Any]) -> CharLMTrainer:
    return CharLMTrainer(**hparams)


def mlp(hparams: dict[str, Any]) -> MLPTrainer:
    return MLPTrainer(**{k: v for k, v in hparams.items() if k != "epochs"},
                      epochs=int(hparams.get("epochs", 6)))


def raising(hparams: dict[str, Any]) -> CharLMTrainer:
    raise ValueError(f"no such width: {hparams.get('width')}")


def not_a_trainable(hparams: dict[str, Any]) -> dict[str, Any]:
    return dict(hparams)


NOT_CALLABLE = 3
