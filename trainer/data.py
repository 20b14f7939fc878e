"""ARC pairs as bucketed canvases: the split, the encoding and the batch order.

Every grid sits in the top-left corner of a square canvas of PAD. Canvases are bucketed
(most pairs fit on 11x11 or 16x16) so a batch costs what its grids need, not 31x31.
The model reads the input canvas with END markers around the grid, and predicts the
output canvas: colours inside the grid, END on the row below and the column right of it
(so the output's shape is predicted too), PAD beyond (not scored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from trainer.augment import PAD
from trainer.config import TrainConfig
from trainer.tasks import Pair, Task, load_tasks

END = 11          # end-of-grid marker: the row below and the column right of the grid
QUERY = 12        # the token at every output position the model must fill
VOCAB = 13        # colours 0..9, PAD, END, QUERY
N_CLASSES = 12    # what the model predicts: colours 0..9, PAD, END
IGNORE = -100     # targets that are not scored (PAD beyond the markers)
BUCKETS = (11, 16, 21, 31)  # canvas sides; a bucket holds grids up to side - 1
SPLIT_SEED = 1234  # the validation split is fixed, whatever the run's seed


@dataclass(frozen=True)
class Bucket:
    """All pairs of one canvas size, as tensors (CPU, int8/int64)."""

    side: int
    inputs: torch.Tensor       # (N, side, side) int8, PAD outside the grid
    input_shapes: torch.Tensor  # (N, 2) int64 (h, w)
    outputs: torch.Tensor      # (N, side, side) int8
    output_shapes: torch.Tensor  # (N, 2)
    tasks: torch.Tensor        # (N,) int64 index into ArcData.task_ids

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to(self, device: torch.device) -> Bucket:
        return Bucket(self.side, *(t.to(device) for t in (
            self.inputs, self.input_shapes, self.outputs, self.output_shapes, self.tasks)))


@dataclass(frozen=True)
class Dataset:
    """A set of pairs, bucketed by canvas side."""

    buckets: tuple[Bucket, ...]

    def __len__(self) -> int:
        return sum(len(b) for b in self.buckets)

    def to(self, device: torch.device) -> Dataset:
        return Dataset(tuple(b.to(device) for b in self.buckets))


@dataclass(frozen=True)
class ArcData:
    """The three sets a run uses and the task vocabulary of the task embedding."""

    task_ids: tuple[str, ...]
    train: Dataset
    val: Dataset
    test: Dataset   # the evaluation tasks' test pairs: held out, the real metric

    def to(self, device: torch.device) -> ArcData:
        """The same data with every tensor on `device` (a no-op on the CPU)."""
        if all(b.inputs.device == device for b in self.train.buckets):
            return self
        return ArcData(self.task_ids, self.train.to(device), self.val.to(device),
                       self.test.to(device))

    def summary(self) -> dict[str, int]:
        return {"tasks": len(self.task_ids), "train_pairs": len(self.train),
                "val_pairs": len(self.val), "test_pairs": len(self.test)}


def _bucket_side(pair: Pair) -> int | None:
    longest = max(*pair.input.shape, *pair.output.shape)
    return next((side for side in BUCKETS if longest < side), None)


def _encode(pairs: list[tuple[int, Pair]]) -> Dataset:
    by_side: dict[int, list[tuple[int, Pair]]] = {}
    for task_index, pair in pairs:
        side = _bucket_side(pair)
        if side is not None:
            by_side.setdefault(side, []).append((task_index, pair))
    buckets = []
    for side in sorted(by_side):
        items = by_side[side]
        grids = np.full((2, len(items), side, side), PAD, dtype=np.int8)
        shapes = np.zeros((2, len(items), 2), dtype=np.int64)
        for i, (_, pair) in enumerate(items):
            for k, grid in enumerate((pair.input, pair.output)):
                h, w = grid.shape
                grids[k, i, :h, :w] = grid
                shapes[k, i] = (h, w)
        tasks = torch.tensor([t for t, _ in items], dtype=torch.int64)
        buckets.append(Bucket(side, torch.from_numpy(grids[0]), torch.from_numpy(shapes[0]),
                              torch.from_numpy(grids[1]), torch.from_numpy(shapes[1]), tasks))
    return Dataset(tuple(buckets))


def _select(tasks: list[Task], max_tasks: int) -> list[Task]:
    tasks = sorted(tasks, key=lambda t: t.id)
    return tasks[:max_tasks] if max_tasks else tasks


def _fits(pair: Pair, max_grid: int) -> bool:
    return max(*pair.input.shape, *pair.output.shape) <= max_grid


def build_data(config: TrainConfig) -> ArcData:
    """Load the tasks of `config.data` and split them as the design says.

    Training pool: the training tasks' pairs (demonstrations and tests) and the evaluation
    tasks' demonstrations. Held out: the evaluation tasks' test pairs. A fixed-seed share
    of the pool (`val_fraction`) is the validation set that steers the tuner.
    """
    training, evaluation = load_tasks(config.data)
    training = _select(training, config.max_tasks)
    evaluation = _select(evaluation, config.max_tasks)
    tasks = training + evaluation
    pool: list[tuple[int, Pair]] = []
    test: list[tuple[int, Pair]] = []
    for index, task in enumerate(tasks):
        pool += [(index, p) for p in task.train if _fits(p, config.max_grid)]
        held = test if task.split == "evaluation" else pool
        held += [(index, p) for p in task.test if _fits(p, config.max_grid)]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(pool))
    n_val = max(1, round(len(pool) * config.val_fraction)) if len(pool) > 1 else 0
    val = [pool[i] for i in sorted(order[:n_val])]
    train = [pool[i] for i in sorted(order[n_val:])]
    return ArcData(tuple(t.id for t in tasks), _encode(train), _encode(val), _encode(test))


def steps_per_epoch(dataset: Dataset, batch_size: int) -> int:
    """Optimizer steps in one epoch (every bucket's last batch may be short)."""
    return sum(math.ceil(len(b) / batch_size) for b in dataset.buckets)


def epoch_batches(dataset: Dataset, batch_size: int, seed: int,
                  epoch: int) -> list[tuple[int, torch.Tensor]]:
    """The epoch's batches as (bucket index, pair indices), a pure function of the seed.

    No sampler state to save: a resumed run recomputes the same order.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    batches: list[tuple[int, torch.Tensor]] = []
    for b, bucket in enumerate(dataset.buckets):
        perm = torch.randperm(len(bucket), generator=gen)
        batches += [(b, chunk) for chunk in perm.split(batch_size)]
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def class_counts(dataset: Dataset) -> torch.Tensor:
    """How often each class (colours 0..9, PAD, END) is a scored target of `dataset`."""
    counts = torch.zeros(N_CLASSES, dtype=torch.float64)
    for b in dataset.buckets:
        targets = targets_of(b.outputs.cpu(), b.output_shapes.cpu())
        counts += torch.bincount(targets[targets != IGNORE], minlength=N_CLASSES).double()
    return counts


def marginal_loss(train: Dataset, val: Dataset, augmented: bool) -> float:
    """The validation cross-entropy of a model that learned which classes are common and
    nothing about the input: every cell predicted with the training targets' frequencies.

    Colour augmentation permutes colours 1..9 (0 stays), so under it the frequencies the
    model sees are those of 1..9 pooled and shared out evenly. A run whose validation loss
    sits at this value predicts the background and the grid's end, not the task: the
    collapse a too-high learning rate leaves behind.
    """
    return _frequency_loss(class_counts(train), class_counts(val), augmented)


def marginal_losses(data: ArcData) -> dict[tuple[str, bool], float]:
    """`marginal_loss` of the training and validation pairs, with and without augmentation,
    keyed (split, augmented); each set's classes counted once."""
    train, val = class_counts(data.train), class_counts(data.val)
    return {(split, augmented): _frequency_loss(train, scored, augmented)
            for split, scored in (("train", train), ("val", val))
            for augmented in (False, True)}


def _frequency_loss(counts: torch.Tensor, scored: torch.Tensor, augmented: bool) -> float:
    """Cross-entropy of the `scored` class counts under the frequencies of `counts`."""
    if augmented:
        counts = counts.clone()
        counts[1:10] = counts[1:10].sum() / 9
    if counts.sum() == 0 or scored.sum() == 0:
        return math.nan
    log_p = torch.log(counts / counts.sum())
    seen = counts > 0  # a class never seen in training would make it infinite: left out
    return float(-(scored[seen] * log_p[seen]).sum() / scored.sum())


def eval_batches(dataset: Dataset, batch_size: int) -> list[tuple[int, torch.Tensor]]:
    """Every pair once, in order."""
    return [(b, chunk) for b, bucket in enumerate(dataset.buckets)
            for chunk in torch.arange(len(bucket)).split(batch_size)]


def with_markers(grids: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """Canvases with END on the row below and the column right of each grid."""
    side = grids.shape[-1]
    rows = torch.arange(side, device=grids.device).view(1, side, 1)
    cols = torch.arange(side, device=grids.device).view(1, 1, side)
    h = shapes[:, 0].view(-1, 1, 1)
    w = shapes[:, 1].view(-1, 1, 1)
    marker = ((rows == h) & (cols <= w)) | ((cols == w) & (rows <= h))
    return torch.where(marker, END, grids)


def targets_of(outputs: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
    """Output canvases as training targets: colours and END scored, PAD ignored."""
    marked = with_markers(outputs.long(), shapes)
    return torch.where(marked == PAD, IGNORE, marked)
