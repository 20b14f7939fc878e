"""Dihedral x colour augmentation: against numpy, exact inverse, bijection, determinism."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from trainer.augment import (
    NUM_COLOURS,
    PAD,
    Transforms,
    apply,
    invert,
    sample_transforms,
)

CPU = torch.device("cpu")
CANVAS = 31
# Element k of the dihedral group, as the numpy operations that define it.
NUMPY_DIHEDRAL: list[Callable[[np.ndarray], np.ndarray]] = [
    lambda x: x,
    np.fliplr,
    np.flipud,
    lambda x: np.rot90(x, 2),
    lambda x: x.T,
    lambda x: np.rot90(x, 3),
    np.rot90,
    lambda x: np.rot90(x, 2).T,
]
SHAPES = [(1, 1), (1, 17), (17, 1), (3, 7), (7, 3), (5, 5), (30, 30), (30, 1), (12, 29)]


def random_grids(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    return [rng.integers(0, 10, size=shape) for shape in shapes]


def to_canvas(grids: list[np.ndarray], size: int = CANVAS) -> tuple[torch.Tensor, torch.Tensor]:
    canvas = np.full((len(grids), size, size), PAD, dtype=np.int64)
    for b, grid in enumerate(grids):
        canvas[b, : grid.shape[0], : grid.shape[1]] = grid
    shapes = torch.tensor([grid.shape for grid in grids], dtype=torch.long)
    return torch.from_numpy(canvas), shapes


def numpy_transform(grid: np.ndarray, dihedral: int, colour: np.ndarray) -> np.ndarray:
    return colour[NUMPY_DIHEDRAL[dihedral](grid)]


def random_transforms(rng: np.random.Generator, dihedral: list[int]) -> Transforms:
    colour = [np.concatenate([[0], rng.permutation(9) + 1]) for _ in dihedral]
    return Transforms(torch.tensor(dihedral), torch.tensor(np.stack(colour)))


@pytest.mark.parametrize("k", range(8))
def test_apply_matches_numpy(k: int) -> None:
    rng = np.random.default_rng(k)
    grids = random_grids(rng, SHAPES)
    t = random_transforms(rng, [k] * len(grids))
    out, new_shapes = apply(*to_canvas(grids), t)
    expected = [numpy_transform(g, k, t.colour[b].numpy()) for b, g in enumerate(grids)]
    expected_canvas, expected_shapes = to_canvas(expected)
    assert torch.equal(out, expected_canvas)
    assert torch.equal(new_shapes, expected_shapes)
    if k & 4:
        assert torch.equal(new_shapes, to_canvas(grids)[1].flip(1))


@pytest.mark.parametrize("k", range(8))
def test_invert_undoes_apply_exactly(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    grids, shapes = to_canvas(random_grids(rng, SHAPES))
    t = random_transforms(rng, [k] * len(SHAPES))
    restored, restored_shapes = invert(*apply(grids, shapes, t), t)
    assert torch.equal(restored, grids) and torch.equal(restored_shapes, shapes)
    # And the other way round: apply undoes invert.
    back = apply(*invert(grids, shapes, t), t)
    assert torch.equal(back[0], grids) and torch.equal(back[1], shapes)


@pytest.mark.parametrize("k", range(8))
def test_apply_is_a_bijection_of_cells(k: int) -> None:
    shapes = SHAPES
    # Cell ids above PAD pass through the colour map unchanged, so they track where each goes.
    ids = [PAD + 1 + np.arange(h * w).reshape(h, w) for h, w in shapes]
    rng = np.random.default_rng(200 + k)
    t = random_transforms(rng, [k] * len(shapes))
    out, new_shapes = apply(*to_canvas(ids), t)
    for b, (h, w) in enumerate(shapes):
        nh, nw = new_shapes[b].tolist()
        assert (nh, nw) == ((w, h) if k & 4 else (h, w))
        inside = out[b, :nh, :nw]
        assert sorted(inside.flatten().tolist()) == sorted(ids[b].flatten().tolist())
        assert (out[b] == PAD).sum().item() == CANVAS * CANVAS - h * w


@pytest.mark.parametrize("k", range(8))
def test_colours_map_through_the_permutation(k: int) -> None:
    rng = np.random.default_rng(300 + k)
    grids = random_grids(rng, SHAPES)
    t = random_transforms(rng, [k] * len(grids))
    out, new_shapes = apply(*to_canvas(grids), t)
    for b, grid in enumerate(grids):
        nh, nw = new_shapes[b].tolist()
        inside = out[b, :nh, :nw].numpy()
        counts_before = np.bincount(grid.flatten(), minlength=10)
        counts_after = np.bincount(inside.flatten(), minlength=10)
        assert np.array_equal(counts_after[t.colour[b].numpy()], counts_before)
        assert (inside == 0).sum() == (grid == 0).sum()
        assert (out[b, nh:] == PAD).all() and (out[b, :, nw:] == PAD).all()


def test_eight_transforms_of_an_asymmetric_grid_are_distinct() -> None:
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    t = Transforms(torch.arange(8), torch.arange(10).expand(8, 10))
    out, new_shapes = apply(*to_canvas([grid] * 8), t)
    results = [out[k, : new_shapes[k, 0], : new_shapes[k, 1]].numpy() for k in range(8)]
    assert len({(r.shape, r.tobytes()) for r in results}) == 8
    for k, result in enumerate(results):
        assert np.array_equal(result, NUMPY_DIHEDRAL[k](grid))


def test_same_transforms_on_inputs_and_outputs() -> None:
    rng = np.random.default_rng(7)
    inputs = random_grids(rng, SHAPES)
    outputs = random_grids(rng, [(w, (h * 2) % 30 + 1) for h, w in SHAPES])
    t = sample_transforms(len(SHAPES), seed=11, device=CPU)
    for side in (inputs, outputs):
        out, _ = apply(*to_canvas(side), t)
        expected = [
            numpy_transform(g, int(t.dihedral[b]), t.colour[b].numpy()) for b, g in enumerate(side)
        ]
        assert torch.equal(out, to_canvas(expected)[0])


def test_values_above_pad_keep_their_value() -> None:
    grid = np.array([[0, 11, 3], [12, PAD + 1, 9]])
    t = Transforms(torch.tensor([0]), torch.tensor([[0, 9, 8, 7, 6, 5, 4, 3, 2, 1]]))
    out, _ = apply(*to_canvas([grid], size=4), t)
    assert out[0, :2, :3].tolist() == [[0, 11, 7], [12, 11, 1]]


def test_sample_transforms_is_deterministic_and_valid() -> None:
    a = sample_transforms(512, seed=3, device=CPU)
    b = sample_transforms(512, seed=3, device=CPU)
    c = sample_transforms(512, seed=4, device=CPU)
    assert torch.equal(a.dihedral, b.dihedral) and torch.equal(a.colour, b.colour)
    assert not torch.equal(a.colour, c.colour)
    assert a.dihedral.dtype == a.colour.dtype == torch.long
    assert set(a.dihedral.tolist()) == set(range(8))
    assert (a.colour[:, 0] == 0).all()
    assert torch.equal(a.colour.sort(dim=1).values, torch.arange(10).expand(512, 10))
    # Every colour 1..9 lands on every other colour somewhere: the permutations are mixed.
    assert all(len(set(a.colour[:, v].tolist())) == 9 for v in range(1, 10))


def identity(batch_size: int, device: torch.device) -> Transforms:
    """Transforms that leave every sample as it is."""
    return Transforms(
        dihedral=torch.zeros(batch_size, dtype=torch.long, device=device),
        colour=torch.arange(NUM_COLOURS, device=device).expand(batch_size, -1).clone(),
    )


def test_identity_changes_nothing() -> None:
    grids, shapes = to_canvas(random_grids(np.random.default_rng(0), SHAPES))
    out, new_shapes = apply(grids, shapes, identity(len(SHAPES), CPU))
    assert torch.equal(out, grids) and torch.equal(new_shapes, shapes)


def test_apply_rejects_mismatched_batch() -> None:
    grids, shapes = to_canvas([np.zeros((2, 2), dtype=np.int64)] * 3)
    with pytest.raises(ValueError, match="B transforms"):
        apply(grids, shapes, identity(2, CPU))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    cuda = torch.device("cuda")
    grids, shapes = to_canvas(random_grids(np.random.default_rng(5), SHAPES))
    t_cpu = sample_transforms(len(SHAPES), seed=9, device=CPU)
    t_gpu = sample_transforms(len(SHAPES), seed=9, device=cuda)
    assert torch.equal(t_gpu.colour.cpu(), t_cpu.colour)
    out_gpu, shapes_gpu = apply(grids.to(cuda), shapes.to(cuda), t_gpu)
    out_cpu, shapes_cpu = apply(grids, shapes, t_cpu)
    assert torch.equal(out_gpu.cpu(), out_cpu) and torch.equal(shapes_gpu.cpu(), shapes_cpu)
    back, _ = invert(out_gpu, shapes_gpu, t_gpu)
    assert torch.equal(back.cpu(), grids)
