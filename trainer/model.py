"""An encoder transformer over grid cells: pre-norm, RMSNorm, 2D positions, a task token.

The sequence is [task token] + the input canvas (with END markers) + one QUERY token per
output cell; attention is bidirectional and the model predicts every output cell at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.data import BUCKETS, N_CLASSES, QUERY, VOCAB

# (d_model, n_layers, n_heads) per size.
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (64, 2, 4),        # ~0.15M parameters with 240 tasks: seconds an epoch on CPU
    "default": (192, 5, 6),    # ~2.5M parameters with 800 tasks
    "large": (384, 8, 8),      # ~14M
}


@dataclass(frozen=True)
class ModelConfig:
    """The model's shape; checkpoints carry it so a resume rebuilds the same model."""

    n_tasks: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    max_side: int = BUCKETS[-1]

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model must be divisible by n_heads but got {self.d_model} "
                             f"and {self.n_heads}.")
        if self.n_tasks < 1:
            raise ValueError(f"n_tasks must be positive but got {self.n_tasks}.")

    @classmethod
    def of_size(cls, size: str, n_tasks: int) -> ModelConfig:
        d, layers, heads = SIZES[size]
        return cls(n_tasks=n_tasks, d_model=d, n_layers=layers, n_heads=heads)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm attention and MLP, each on a residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.norm1 = nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, cfg.mlp_ratio * d, bias=False), nn.GELU(),
                                 nn.Linear(cfg.mlp_ratio * d, d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, d // self.n_heads) \
            .permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class GridTransformer(nn.Module):
    """Maps (task, input canvas) to logits for every cell of the output canvas."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.task = nn.Embedding(cfg.n_tasks, d)
        self.token = nn.Embedding(VOCAB, d)
        self.row = nn.Embedding(cfg.max_side, d)
        self.col = nn.Embedding(cfg.max_side, d)
        self.segment = nn.Embedding(2, d)  # 0: input canvas, 1: output queries
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(d)
        self.head = nn.Linear(d, N_CLASSES, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, tasks: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """tasks (B,), inputs (B, S, S) tokens -> logits (B, S, S, N_CLASSES)."""
        b, side, _ = inputs.shape
        idx = torch.arange(side, device=inputs.device)
        pos = (self.row(idx)[:, None, :] + self.col(idx)[None, :, :]).reshape(side * side, -1)
        cells = self.token(inputs.reshape(b, -1)) + pos + self.segment.weight[0]
        query = (self.token.weight[QUERY] + pos + self.segment.weight[1]).expand(b, -1, -1)
        x = torch.cat([self.task(tasks)[:, None, :], cells, query], dim=1)
        for block in self.blocks:
            x = block(x)
        out = self.head(self.norm(x[:, 1 + side * side:]))
        return out.view(b, side, side, N_CLASSES)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
