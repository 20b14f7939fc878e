"""The ARC metric: pass@2 on held-out test pairs, with votes over augmented views.

ARC is scored on exact outputs: a test output counts when one of two attempts is the
whole grid, shape included. Each test input is predicted under several views (the 8
dihedral transforms times a few colour permutations, the identity first); each prediction
is cropped at its END markers (the row below and the column right of the grid), mapped
back with the view's inverse, and the grids are voted: the two most voted are the
attempts (pass@2), the most voted one alone is pass@1. Copying the input, the baseline
beside it, solves the pairs whose output equals their input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from trainer.augment import NUM_COLOURS, PAD, Transforms, apply, invert
from trainer.data import END, Dataset, with_markers

__all__ = ["ArcScores", "Grid", "crop", "score", "top_votes", "views"]

Grid = tuple[tuple[int, ...], ...]
"""A grid as nested tuples (hashable, so it can be voted on)."""

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(tasks (B,), input tokens (B, S, S)) -> logits (B, S, S, classes)."""


@dataclass(frozen=True)
class ArcScores:
    """Fractions of the test outputs solved."""

    pass2: float
    pass1: float
    copy: float
    """The copy-the-input baseline: the output equals the input."""
    outputs: int
    views: int

    def to_dict(self, prefix: str = "test") -> dict[str, float]:
        return {f"{prefix}_pass2": self.pass2, f"{prefix}_pass1": self.pass1,
                f"{prefix}_copy_pass": self.copy, f"{prefix}_outputs": self.outputs,
                f"{prefix}_views": self.views}


def views(colour_perms: int = 2, seed: int = 0) -> list[tuple[int, tuple[int, ...]]]:
    """(dihedral element, colour permutation) pairs: 8 x `colour_perms`, the identity first.

    The first permutation is the identity, the others are drawn from `seed` (colour 0, the
    background, stays 0).
    """
    generator = torch.Generator().manual_seed(seed)
    perms = [tuple(range(NUM_COLOURS))]
    for _ in range(colour_perms - 1):
        shuffled = (torch.randperm(NUM_COLOURS - 1, generator=generator) + 1).tolist()
        perms.append((0, *shuffled))
    return [(k, perm) for perm in perms for k in range(8)]


def crop(canvas: torch.Tensor) -> Grid | None:
    """The grid a predicted canvas shows: rows above the first END of column 0, columns
    left of the first END of row 0; None when a marker is missing or a cell inside is not
    a colour."""
    rows = (canvas[:, 0] == END).nonzero()
    cols = (canvas[0, :] == END).nonzero()
    if len(rows) == 0 or len(cols) == 0:
        return None
    h, w = int(rows[0]), int(cols[0])
    if h == 0 or w == 0:
        return None
    grid = canvas[:h, :w]
    if bool((grid >= NUM_COLOURS).any()):
        return None
    return tuple(tuple(int(v) for v in row) for row in grid.tolist())


def top_votes(grids: Sequence[Grid | None], k: int = 2) -> list[Grid]:
    """The `k` most voted grids, ties broken by the earliest view (the identity first)."""
    counts = Counter(g for g in grids if g is not None)
    first: dict[Grid, int] = {}
    for i, g in enumerate(grids):
        if g is not None:
            first.setdefault(g, i)
    return sorted(counts, key=lambda g: (-counts[g], first[g]))[:k]


def _as_grid(canvas: torch.Tensor, shape: torch.Tensor) -> Grid:
    h, w = int(shape[0]), int(shape[1])
    return tuple(tuple(int(v) for v in row) for row in canvas[:h, :w].tolist())


def _canvas(grid: Grid, side: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.full((side, side), PAD, dtype=torch.long, device=device)
    h, w = len(grid), len(grid[0])
    out[:h, :w] = torch.tensor(grid, dtype=torch.long, device=device)
    return out, torch.tensor([h, w], dtype=torch.long, device=device)


@torch.no_grad()
def predict_views(model: Model, tasks: torch.Tensor, inputs: torch.Tensor,
                  shapes: torch.Tensor, view_list: Sequence[tuple[int, tuple[int, ...]]]
                  ) -> list[list[Grid | None]]:
    """For each pair of the batch, its predicted grid under every view, in the original
    orientation and colours (None where the prediction has no valid grid)."""
    batch, side = inputs.shape[0], inputs.shape[-1]
    device = inputs.device
    out: list[list[Grid | None]] = [[] for _ in range(batch)]
    for k, perm in view_list:
        t = Transforms(dihedral=torch.full((batch,), k, dtype=torch.long, device=device),
                       colour=torch.tensor(perm, device=device).expand(batch, -1))
        moved, moved_shapes = apply(inputs, shapes, t)
        pred = model(tasks, with_markers(moved, moved_shapes)).argmax(-1)
        for b in range(batch):
            grid = crop(pred[b])
            if grid is None:
                out[b].append(None)
                continue
            canvas, shape = _canvas(grid, side, device)
            one = Transforms(t.dihedral[b:b + 1], t.colour[b:b + 1])
            back, back_shape = invert(canvas[None], shape[None], one)
            out[b].append(_as_grid(back[0], back_shape[0]))
    return out


def score(model: Model, dataset: Dataset, colour_perms: int = 2, seed: int = 0,
          batch_size: int = 64) -> ArcScores:
    """pass@2, pass@1 and the copy baseline over every pair of `dataset`."""
    view_list = views(colour_perms, seed)
    solved2 = solved1 = copied = total = 0
    for bucket in dataset.buckets:
        for index in torch.arange(len(bucket)).split(batch_size):
            index = index.to(bucket.inputs.device)
            inputs, shapes = bucket.inputs[index].long(), bucket.input_shapes[index]
            outputs, out_shapes = bucket.outputs[index].long(), bucket.output_shapes[index]
            predicted = predict_views(model, bucket.tasks[index], inputs, shapes, view_list)
            for b, grids in enumerate(predicted):
                target = _as_grid(outputs[b], out_shapes[b])
                attempts = top_votes(grids, 2)
                solved2 += target in attempts
                solved1 += bool(attempts) and attempts[0] == target
                copied += _as_grid(inputs[b], shapes[b]) == target
                total += 1
    n = max(total, 1)
    return ArcScores(solved2 / n, solved1 / n, copied / n, total, len(view_list))
