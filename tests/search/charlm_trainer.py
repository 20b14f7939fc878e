"""A second trainer that is not ours: a character-level language model.

Next-character prediction over a synthetic text (sentences drawn from a small grammar),
an embedding of the last few characters and a two-layer MLP, Adam at a constant rate, with
its own dict of hyperparameters. Written only against `autotune.Trainable`: a different
kind of model, loss and optimizer from `tests/recovery/mlp_trainer.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

WORDS = ("the", "a", "cat", "dog", "bird", "sat", "ran", "flew", "on", "under", "mat",
         "tree", "log", "quickly", "slowly")


def synthetic_text(sentences: int, seed: int = 7) -> str:
    """Sentences of the form `the cat sat on a mat quickly.` from a fixed generator."""
    g = torch.Generator().manual_seed(seed)

    def pick(options: tuple[str, ...]) -> str:
        return options[int(torch.randint(len(options), (1,), generator=g))]

    out = []
    for _ in range(sentences):
        out.append(f"{pick(WORDS[:2])} {pick(WORDS[2:5])} {pick(WORDS[5:8])} "
                   f"{pick(WORDS[8:10])} {pick(WORDS[:2])} {pick(WORDS[10:13])} "
                   f"{pick(WORDS[13:])}.")
    return " ".join(out)


class CharLMTrainer:
    """A character-level language model; `hparams`: learning_rate, grad_clip."""

    context = 4
    batch = 64

    def __init__(self, learning_rate: float = 3e-3, grad_clip: float = 0.0, width: int = 32,
                 seed: int = 0, **_: Any) -> None:
        self._hparams = {"learning_rate": float(learning_rate), "grad_clip": float(grad_clip)}
        text = synthetic_text(60)
        vocab = sorted(set(text))
        ids = torch.tensor([vocab.index(c) for c in text])
        windows = ids.unfold(0, self.context + 1, 1)
        split = int(0.85 * len(windows))
        self.train_x, self.train_y = windows[:split, :-1], windows[:split, -1]
        self.val_x, self.val_y = windows[split:, :-1], windows[split:, -1]
        self.chance_loss = math.log(len(vocab))  # optional: a model that knows nothing
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Embedding(len(vocab), 16), nn.Flatten(),
                                   nn.Linear(self.context * 16, width), nn.ReLU(),
                                   nn.Linear(width, len(vocab)))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=learning_rate)
        self.steps_per_epoch = math.ceil(len(self.train_x) / self.batch)
        self.step = 0
        self.order = torch.Generator().manual_seed(seed)

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self._hparams)

    def apply_changes(self, changes: Mapping[str, Any]) -> None:
        self._hparams.update(changes)
        for group in self.optimizer.param_groups:
            group["lr"] = self._hparams["learning_rate"]

    def train_epoch(self, on_step: Callable[[int, float, float | None], None]
                    ) -> dict[str, float]:
        self.model.train()
        losses = []
        for index in torch.randperm(len(self.train_x), generator=self.order).split(self.batch):
            loss = nn.functional.cross_entropy(self.model(self.train_x[index]),
                                               self.train_y[index])
            self.optimizer.zero_grad()
            loss.backward()
            clip = self._hparams["grad_clip"]
            norm = nn.utils.clip_grad_norm_(self.model.parameters(),
                                            clip if clip > 0 else math.inf)
            value = loss.item()
            on_step(self.step, value, norm.item())  # raises: no update for this step
            self.optimizer.step()
            self.step += 1
            losses.append(value)
        return {"train_loss": sum(losses) / len(losses),
                "lr": self.optimizer.param_groups[0]["lr"]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        logits = self.model(self.val_x)
        return {"val_loss": nn.functional.cross_entropy(logits, self.val_y).item(),
                "val_acc": (logits.argmax(-1) == self.val_y).float().mean().item()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "order": self.order.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])  # brings the older rate back
        self.step = int(state["step"])
        self.order.set_state(state["order"])
        self.apply_changes({})  # the rate in force wins over the state's
