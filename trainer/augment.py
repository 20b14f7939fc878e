"""Dihedral x colour-permutation augmentation of batched canvases, on the device.

A batch holds each grid in the top-left h x w corner of a C x C canvas, PAD elsewhere. One
`Transforms` per batch gives every sample its own dihedral transform and colour permutation;
applying the same object to the input canvases and to the output canvases applies the same
transform to both sides of each pair. Everything is gather and index arithmetic over the
whole batch: no Python loop over samples or cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

PAD = 10
NUM_COLOURS = 10

# Dihedral element k is three bits applied in this order: 4 transpose, 2 flip rows, 1 flip
# columns. Bits rather than a lookup table keep the flags free of host-to-device copies. So
#   0 identity, 1 np.fliplr(x), 2 np.flipud(x), 3 np.rot90(x, 2),
#   4 x.T, 5 np.rot90(x, 3), 6 np.rot90(x), 7 np.rot90(x, 2).T (the anti-transpose).
TRANSPOSE, FLIP_ROWS, FLIP_COLS = 4, 2, 1


@dataclass(frozen=True, eq=False)
class Transforms:
    """One augmentation per sample of a batch.

    Attributes:
        dihedral: LongTensor (B,), 0..7, 0 the identity (see the table above).
        colour: LongTensor (B, 10), a permutation of 0..9 per sample; colour 0 (the
            background) maps to 0. Cell value v becomes colour[b, v].
    """

    dihedral: Tensor
    colour: Tensor


def sample_transforms(batch_size: int, seed: int, device: torch.device) -> Transforms:
    """Random transforms for a batch, a pure function of `seed`.

    A resumed run that derives the seed from the step sees the same augmentation without
    saving any generator state. Drawn on the CPU so the result is the same on every device.
    """
    generator = torch.Generator().manual_seed(seed)
    dihedral = torch.randint(0, 8, (batch_size,), generator=generator)
    # argsort of uniform noise: a uniform random permutation of colours 1..9 per sample.
    shuffled = torch.rand(batch_size, NUM_COLOURS - 1, generator=generator).argsort(dim=1) + 1
    colour = torch.cat([torch.zeros(batch_size, 1, dtype=torch.long), shuffled], dim=1)
    return Transforms(dihedral=dihedral.to(device), colour=colour.to(device))


def sample_many(batch_sizes: Sequence[int], seeds: Sequence[int], device: torch.device
                ) -> list[Transforms]:
    """The transforms of many batches (each as `sample_transforms` draws it), copied to the
    device in one transfer: a copy from host memory waits for the device's queue, so one
    copy an epoch instead of one a step keeps the GPU busy."""
    cpu = torch.device("cpu")
    drawn = [sample_transforms(n, seed, cpu) for n, seed in zip(batch_sizes, seeds, strict=True)]
    if not drawn:
        return []
    dihedral = torch.cat([t.dihedral for t in drawn]).to(device)
    colour = torch.cat([t.colour for t in drawn]).to(device)
    return [Transforms(dihedral=d, colour=c) for d, c in
            zip(dihedral.split(list(batch_sizes)), colour.split(list(batch_sizes)))]


def apply(grids: Tensor, shapes: Tensor, t: Transforms) -> tuple[Tensor, Tensor]:
    """Transform each sample's grid by its dihedral element and colour permutation.

    Args:
        grids: LongTensor (B, C, C), grid in the top-left h x w corner, PAD elsewhere.
        shapes: LongTensor (B, 2), the (h, w) of each grid.
        t: one transform per sample.

    Returns:
        The transformed canvases (grid top-left, PAD elsewhere) and their (h, w) shapes,
        which swap for the transposing elements.
    """
    batch, size, size2 = grids.shape
    if size != size2 or shapes.shape != (batch, 2) or t.dihedral.shape != (batch,):
        raise ValueError(
            f"apply needs grids (B, C, C), shapes (B, 2) and B transforms but got "
            f"{tuple(grids.shape)}, {tuple(shapes.shape)} and {tuple(t.dihedral.shape)}."
        )
    device = grids.device
    k = t.dihedral.view(batch, 1, 1)
    transpose, flip_rows, flip_cols = (k & bit != 0 for bit in (TRANSPOSE, FLIP_ROWS, FLIP_COLS))
    height, width = shapes[:, 0].view(batch, 1, 1), shapes[:, 1].view(batch, 1, 1)
    new_height = torch.where(transpose, width, height)
    new_width = torch.where(transpose, height, width)

    # For each target cell (i, j): undo the flips within the new shape, then the transpose.
    i = torch.arange(size, device=device).view(1, size, 1)
    j = torch.arange(size, device=device).view(1, 1, size)
    i0 = torch.where(flip_rows, new_height - 1 - i, i)
    j0 = torch.where(flip_cols, new_width - 1 - j, j)
    src_row = torch.where(transpose, j0, i0)
    src_col = torch.where(transpose, i0, j0)
    inside = (i < new_height) & (j < new_width)
    # Cells outside the new shape point at (0, 0), which exists; the mask sets them to PAD.
    flat = torch.where(inside, src_row * size + src_col, 0).view(batch, size * size)
    moved = grids.reshape(batch, size * size).gather(1, flat).view(batch, size, size)

    # Colours 0..9 go through the permutation; PAD and any marker above it stay as they are.
    is_colour = (moved >= 0) & (moved < NUM_COLOURS)
    index = moved.clamp(0, NUM_COLOURS - 1).view(batch, size * size)
    recoloured = t.colour.gather(1, index).view(batch, size, size)
    out = torch.where(is_colour, recoloured, moved)
    out = torch.where(inside, out, torch.full_like(out, PAD))
    new_shapes = torch.stack([new_height.view(batch), new_width.view(batch)], dim=1)
    return out, new_shapes


def invert(grids: Tensor, shapes: Tensor, t: Transforms) -> tuple[Tensor, Tensor]:
    """The exact inverse of `apply(., ., t)`: maps its results back to the originals.

    Args:
        grids: LongTensor (B, C, C), transformed canvases (e.g. predictions).
        shapes: LongTensor (B, 2), their (h, w).
        t: the transforms that `apply` used.

    Returns:
        The canvases and shapes in the original orientation and colours.
    """
    # Flips then a transpose equal the transpose then the flips of the other axes, so an
    # element without a transpose is its own inverse and one with it swaps its two flip bits.
    k = t.dihedral
    swapped = (k & TRANSPOSE) | ((k & FLIP_COLS) * FLIP_ROWS) | ((k & FLIP_ROWS) // FLIP_ROWS)
    inverse_dihedral = torch.where(k & TRANSPOSE != 0, swapped, k)
    # Spatial moves and recolouring commute, so undoing both is one more `apply`.
    return apply(grids, shapes, Transforms(inverse_dihedral, t.colour.argsort(dim=1)))
