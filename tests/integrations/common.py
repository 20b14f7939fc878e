"""What the framework tests share: synthetic regression data and a warmup-decay schedule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

FEATURES = 8
STEPS_PER_EPOCH = 20  # 320 training pairs in batches of 16
DIVERGING_LR = 3.0  # plain SGD on this data ends NaN at this rate
STABLE_LR = 0.1


def regression(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` pairs (x, y) with y a noisy linear function of x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    y = x @ torch.linspace(-1.0, 1.0, FEATURES) + 0.1 * torch.randn(n, generator=g)
    return x, y[:, None]


def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 1))


def warmup_then_decay(warmup: int, total: int) -> Callable[[int], float]:
    """The multiplier of a linear warmup over `warmup` steps, then a linear decay to 0 at
    `total` (the HF Trainer's `linear` schedule)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / (total - warmup))
    return factor


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
