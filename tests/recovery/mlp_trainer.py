"""A small trainer that is not ours: an MLP on a synthetic regression task.

Written only against `autotune.Trainable`: its own dict of hyperparameters, its own
`torch.optim.lr_scheduler` (warmup, then cosine), gradient clipping of its own. With
`honours_cuts=False` its `apply_changes` sets the optimizer's rate but not the scheduler's
base rate, so the scheduler undoes a cut at its next step (a bug users write).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn


class MLPTrainer:
    """Regression of y = Xw + noise with a two-layer MLP, SGD with momentum."""

    steps_per_epoch = 8

    def __init__(self, learning_rate: float = 0.02, grad_clip: float = 1.0, epochs: int = 6,
                 warmup_epochs: int = 2, seed: int = 0, honours_cuts: bool = True) -> None:
        self.honours_cuts = honours_cuts
        self._hparams = {"learning_rate": learning_rate, "grad_clip": grad_clip}
        data = torch.Generator().manual_seed(1234)
        x = torch.randn(640, 8, generator=data)
        y = x @ torch.randn(8, 1, generator=data) + 0.1 * torch.randn(640, 1, generator=data)
        self.train_x, self.train_y, self.val_x, self.val_y = x[:512], y[:512], x[512:], y[512:]
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=learning_rate,
                                         momentum=0.9)
        total, warm = epochs * self.steps_per_epoch, warmup_epochs * self.steps_per_epoch

        def shape(step: int) -> float:  # linear warmup, then cosine to 10%
            if step < warm:
                return (step + 1) / warm
            return 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, shape)
        self.step = 0
        self.order = torch.Generator().manual_seed(seed)

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def apply_changes(self, changes: Mapping[str, Any]) -> None:
        self._hparams.update(changes)
        self._apply_rate()

    def _apply_rate(self) -> None:
        lr = self._hparams["learning_rate"]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * factor
        if self.honours_cuts:
            self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]

    def train_epoch(self, on_step: Callable[[int, float, float | None], None]
                    ) -> dict[str, float]:
        self.model.train()
        losses = []
        for index in torch.randperm(512, generator=self.order).split(64):
            loss = nn.functional.mse_loss(self.model(self.train_x[index]), self.train_y[index])
            self.optimizer.zero_grad()
            loss.backward()
            clip = self._hparams["grad_clip"]
            norm = nn.utils.clip_grad_norm_(self.model.parameters(),
                                            clip if clip > 0 else math.inf)
            value = loss.item()
            on_step(self.step, value, norm.item())  # raises: no update for this step
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            losses.append(value)
        return {"train_loss": sum(losses) / len(losses),
                "lr": self.optimizer.param_groups[0]["lr"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        return {"val_loss": nn.functional.mse_loss(self.model(self.val_x), self.val_y).item()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": {"last_epoch": self.scheduler.last_epoch,
                              "base_lrs": list(self.scheduler.base_lrs)},
                "step": self.step, "order": self.order.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.last_epoch = int(state["scheduler"]["last_epoch"])
        self.scheduler.base_lrs = list(state["scheduler"]["base_lrs"])  # the older rate
        self.step = int(state["step"])
        self.order.set_state(state["order"])
        if self.honours_cuts:  # the rate in force wins over the state's
            self._apply_rate()
