"""The ARC metric: cropping, voting, inverting the views, pass@2 (trainer/scoring.py)."""

from __future__ import annotations

import torch

from trainer.augment import PAD
from trainer.data import END, N_CLASSES, ArcData, with_markers
from trainer.scoring import crop, predict_views, score, top_votes, views

GRID = ((1, 2, 3), (4, 5, 6))  # 2 x 3, not symmetric: every dihedral view differs


def _canvas(grid: tuple[tuple[int, ...], ...], side: int = 6) -> torch.Tensor:
    out = torch.full((1, side, side), PAD, dtype=torch.long)
    out[0, :len(grid), :len(grid[0])] = torch.tensor(grid)
    shape = torch.tensor([[len(grid), len(grid[0])]])
    return with_markers(out, shape)[0]


def _copy_model(tasks: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Predicts its input canvas, END markers included (a model that copies)."""
    return torch.nn.functional.one_hot(tokens.clamp(max=N_CLASSES - 1), N_CLASSES).float()


def test_crop_reads_the_grid_inside_the_end_markers() -> None:
    assert crop(_canvas(GRID)) == GRID


def test_a_crop_that_loses_a_row_is_not_exact() -> None:
    canvas = _canvas(GRID)
    canvas[1, :4] = END  # the END row one row too early
    assert crop(canvas) == ((1, 2, 3),)
    assert crop(canvas) != GRID


def test_no_marker_or_a_non_colour_inside_is_no_grid() -> None:
    assert crop(torch.full((6, 6), PAD)) is None
    canvas = _canvas(GRID)
    canvas[0, 1] = PAD
    assert crop(canvas) is None


def test_a_view_that_disagrees_is_outvoted() -> None:
    other = ((9,),)
    assert top_votes([other, GRID, GRID, None], 2) == [GRID, other]
    assert top_votes([other, GRID], 1) == [other]  # a tie: the earliest view wins
    assert top_votes([None, None]) == []


def test_views_are_8_dihedral_times_the_colour_permutations_identity_first() -> None:
    found = views(colour_perms=3, seed=0)
    assert len(found) == 24 and found[0] == (0, tuple(range(10)))
    assert all(perm[0] == 0 and sorted(perm) == list(range(10)) for _, perm in found)


def test_inverting_each_view_restores_the_grid() -> None:
    inputs = torch.full((1, 6, 6), PAD, dtype=torch.long)
    inputs[0, :2, :3] = torch.tensor(GRID)
    shapes = torch.tensor([[2, 3]])
    predicted = predict_views(_copy_model, torch.zeros(1, dtype=torch.long), inputs, shapes,
                              views(colour_perms=2, seed=5))
    assert predicted == [[GRID] * 16]


def test_a_model_that_copies_scores_the_copy_baseline(small_data: ArcData) -> None:
    scores = score(_copy_model, small_data.test, colour_perms=1)
    assert scores.outputs == len(small_data.test) and scores.views == 8
    assert scores.pass2 == scores.copy and scores.pass1 == scores.copy
