"""Bad input across every command, in one table: exit 2, one line naming the bad value and
what is allowed, no traceback, and nothing written (the folder is the same before and after;
in particular no default `studies/` SQLite appears)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest

from autotune.cli.app import main

GOOD_PAIR = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}
SECRET = "s3cret"
STORE = "sqlite:///store.db"  # an existing storage that holds one study, `other`
SPACE = "learning_rate: {low: 1.0e-3, high: 3.0e-3, log: true}\nepochs: 2\nmax_tasks: 20\n"


def _task(train: list[object] | None = None) -> str:
    return json.dumps({"train": train or [GOOD_PAIR], "test": [GOOD_PAIR]})


def _files(**files: str) -> Callable[[Path], None]:
    """A setup that writes `files` (a name ending in / is a folder)."""
    def setup(root: Path) -> None:
        for name, text in files.items():
            path = root / name.replace("__", "/")
            if name.endswith("/"):
                path.mkdir(parents=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return setup


def _store(root: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.create_study(study_name="other", storage=f"sqlite:///{root / 'store.db'}")


def _store_and_file(root: Path) -> None:
    _store(root)
    (root / "plots.txt").write_text("x")


def _nothing(root: Path) -> None:
    return None


# A few hundred bytes that a plain YAML loader expands to 9**9 items (the "billion laughs").
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def _store_with_bad_plan(**bad: object) -> Callable[[Path], None]:
    """A study `bad` in store.db whose stored plan holds a value an older autotune let in."""
    def setup(root: Path) -> None:
        _store(root)
        study = optuna.create_study(study_name="bad", storage=f"sqlite:///{root / 'store.db'}")
        plan = {"study": "bad", "trials": 1, "space": {"epochs": 1}, "profile": "tiny",
                "epochs": None, "artifacts": str(root / "art"), "seed": None, **bad}
        study.set_user_attr("autotune_plan", plan)
    return setup


Row = tuple[str, list[str], Callable[[Path], None], str]

ROWS: list[Row] = [
    # -- train: configuration keys, types, ranges ------------------------------------------
    ("train_unknown_key", ["train", "--set", "learning_rat=0.1"], _nothing,
     "unknown configuration key 'learning_rat'. Did you mean 'learning_rate'?"),
    ("train_wrong_type", ["train", "--set", "learning_rate=fast"], _nothing,
     "learning_rate must be a number but got 'fast'."),
    ("train_out_of_range", ["train", "--set", "label_smoothing=1.5"], _nothing,
     "label_smoothing must be >= 0 and <= 0.99 but got 1.5."),
    ("train_epochs_zero", ["train", "--epochs", "0"], _nothing, "epochs must be >= 1"),
    ("train_config_bad_choice", ["train", "--config", "c.yaml"],
     _files(**{"c.yaml": "schedule: step\n"}),
     "schedule must be one of cosine, linear, constant but got 'step'."),
    ("train_config_not_mapping", ["train", "--config", "c.yaml"],
     _files(**{"c.yaml": "- 1\n- 2\n"}), "must hold a mapping of keys to values"),
    ("train_run_dir_is_a_file", ["train", "--run-dir", "afile"], _files(afile="x"),
     "--run-dir 'afile' is a file, not a directory"),
    ("train_config_python_tag", ["train", "--config", "evil.yaml"],
     _files(**{"evil.yaml": "learning_rate: !!python/object/apply:os.system ['touch pwned']\n"}),
     "is not valid YAML"),
    # -- train: task files and folders through --set data=PATH -----------------------------
    ("data_ragged", ["train", "--set", "data=ragged.json"],
     _files(**{"ragged.json": _task([{"input": [[1, 2], [3]], "output": [[1]]}])}),
     "row 1 has 1 cells but row 0 has 2; grids must be rectangular"),
    ("data_colour_10", ["train", "--set", "data=c10.json"],
     _files(**{"c10.json": _task([{"input": [[1, 10]], "output": [[1]]}])}),
     "row 0 column 1 is 10; colours must be integers 0..9"),
    ("data_colour_negative", ["train", "--set", "data=cneg.json"],
     _files(**{"cneg.json": _task([{"input": [[1]], "output": [[-1]]}])}),
     "is -1; colours must be integers 0..9"),
    ("data_over_30x30", ["train", "--set", "data=big.json"],
     _files(**{"big.json": _task([{"input": [[0] * 31] * 31, "output": [[1]]}])}),
     "grid is 31x31; each side must be 1..30 cells"),
    ("data_empty_file", ["train", "--set", "data=empty.json"], _files(**{"empty.json": ""}),
     "not valid JSON"),
    ("data_not_json", ["train", "--set", "data=oops.json"],
     _files(**{"oops.json": '{"train": [\n  oops'}), "ARC data files must be JSON"),
    ("data_missing_key", ["train", "--set", "data=notest.json"],
     _files(**{"notest.json": json.dumps({"train": [GOOD_PAIR]})}),
     '"test" is missing; a task needs a list of test pairs'),
    ("data_empty_folder", ["train", "--set", "data=tasks"], _files(**{"tasks/": ""}),
     "no *.json task files"),
    ("data_folder_bad_file", ["train", "--set", "data=tasks"],
     _files(**{"tasks__good.json": _task(), "tasks__broken.json": _task([{"input": [[1]]}])}),
     "broken.json: task 'broken' train pair 0"),
    ("data_missing_path", ["train", "--set", "data=nowhere"], _nothing,
     "data must be arcagi, arcagi2, or an existing path"),
    ("data_challenges_alone", ["train", "--set", "data=x_challenges.json"],
     _files(**{"x_challenges.json": json.dumps({"t": json.loads(_task())})}),
     "x_solutions.json does not exist"),
    # -- hostile and careless input (issue 23) ---------------------------------------------
    ("train_config_alias_bomb", ["train", "--config", "bomb.yaml"],
     _files(**{"bomb.yaml": LAUGHS}), "YAML aliases (*a) are not allowed"),
    ("train_config_duplicate_key", ["train", "--config", "dup.yaml"],
     _files(**{"dup.yaml": "learning_rate: 0.1\nepochs: 2\nlearning_rate: 0.001\n"}),
     "duplicate key 'learning_rate' (line 3"),
    ("train_config_special_file", ["train", "--config", "/dev/zero"], _nothing,
     "config file '/dev/zero' is not a regular file"),
    ("train_run_dir_empty", ["train", "--run-dir", ""], _nothing,
     "--run-dir must name a path but got ''"),
    ("train_run_dir_of_another_run", ["train", "--run-dir", "old", "--set", "max_tasks=20"],
     _files(**{"old__metrics.jsonl": '{"epoch": 1, "global_epoch": 1}\n'}),
     "holds files of a run (metrics.jsonl) but no config.yaml"),
    ("train_max_loss_increase_inf", ["train", "--set", "max_loss_increase=inf"], _nothing,
     "max_loss_increase must be a finite number > 0 but got inf"),
    ("resume_empty_run_dir", ["resume", ""], _nothing, "RUN_DIR must name a path but got ''"),
    ("resume_stored_seed_too_large", ["resume", "--study", "bad", "--storage", STORE],
     _store_with_bad_plan(seed=2**32),
     "study 'bad' was stored with a bad value: its seed must be an integer >= 0 and <= "
     "2147483647 but got 4294967296"),
    ("search_seed_too_large", ["search", "--seed", str(2**32), "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "--seed must be an integer >= 0 and <= 2147483647"),
    ("search_artifacts_is_a_file", ["search", "--artifacts", "afile", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE, "afile": "x"}), "--artifacts 'afile' is not a folder"),
    ("search_artifacts_empty", ["search", "--artifacts", "", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "--artifacts must be a folder but got ''"),
    ("search_timeout_inf", ["search", "--timeout", "inf", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "--timeout must be a finite number of seconds > 0"),
    ("space_duplicate_key", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE + "epochs: 3\n"}), "duplicate key 'epochs'"),
    ("space_alias_bomb", ["search", "--space", "s.yaml"], _files(**{"s.yaml": LAUGHS}),
     "YAML aliases (*a) are not allowed"),
    ("study_name_newline", ["search", "--study", "a\nb", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "holds a control character"),
    ("storage_password_query", ["search", "--storage",
                                f"postgresql://postgres@127.0.0.1:1/test?password={SECRET}"],
     _nothing, "storage 'postgresql://postgres@127.0.0.1:1/test?password=***'"),
    ("storage_password_second_query", ["search", "--storage",
                                       "postgresql://postgres@127.0.0.1:1/test?"
                                       f"application_name=x&sslpassword={SECRET}"],
     _nothing, "application_name=x&sslpassword=***"),
    ("storage_token_unknown_driver", ["search", "--storage",
                                      f"mysql+nodriver://h/db?token={SECRET}"],
     _nothing, "storage 'mysql+nodriver://h/db?token=***' cannot be opened"),
    ("export_onto_its_own_database", ["export", "--study", "other", "--storage", STORE,
                                      "--format", "csv", "--output", "store.db"], _store,
     "--output 'store.db' is the study's own storage file"),
    ("export_onto_its_own_journal", ["export", "--storage", "journal:j.log", "--format",
                                     "yaml", "--output", "./j.log"], _nothing,
     "is the study's own storage file"),
    ("report_out_empty", ["report", "--study", "other", "--storage", STORE, "--out", ""],
     _store, "--out must name a path but got ''"),
    ("diagnose_special_file", ["diagnose", "/dev/zero"], _nothing,
     "/dev/zero is not a regular file"),
    # -- resume --------------------------------------------------------------------------
    ("resume_not_a_run", ["resume", "notarun"], _files(**{"notarun__notes.txt": "hi"}),
     "is not a run directory (no config.yaml)"),
    ("resume_missing_run", ["resume", "gone"], _nothing,
     "run directory 'gone' does not exist"),
    ("resume_unknown_study", ["resume", "--study", "nope", "--storage", STORE], _store,
     "no study 'nope' in storage 'sqlite:///store.db' (studies there: other)"),
    ("resume_foreign_study", ["resume", "--study", "other", "--storage", STORE], _store,
     "study 'other' was not created by `autotune search`"),
    ("resume_nothing_to_resume", ["resume"], _nothing, "resume takes a RUN_DIR or --study"),
    # -- diagnose ------------------------------------------------------------------------
    ("diagnose_missing_log", ["diagnose", "missing.csv"], _nothing, "missing.csv does not exist"),
    ("diagnose_log_without_loss", ["diagnose", "log.csv"],
     _files(**{"log.csv": "epoch,lr\n1,0.1\n2,0.1\n"}),
     "missing column 'train_loss'; a training log needs"),
    ("diagnose_not_a_run", ["diagnose", "folder"], _files(**{"folder/": ""}),
     "folder is not a run directory: it has no config.yaml"),
    ("diagnose_empty_log", ["diagnose", "log.jsonl"], _files(**{"log.jsonl": "\n"}),
     "log.jsonl is empty"),
    # -- search: space files, storage URLs, study names ------------------------------------
    ("space_unknown_key", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": "learning_rat: {low: 1.0e-4, high: 1.0e-3}\n"}),
     "Did you mean 'learning_rate'?"),
    ("space_unknown_field", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": "learning_rate: {lo: 1.0e-4, high: 1.0e-3}\n"}),
     "has unknown field 'lo'; allowed: low, high, log, step, or choices"),
    ("space_low_above_high", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": "learning_rate: {low: 1.0e-2, high: 1.0e-3}\n"}),
     "learning_rate has low 0.01 > high 0.001"),
    ("space_empty_choices", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": "batch_size: {choices: []}\n"}),
     "batch_size.choices is empty; give at least one value"),
    ("space_missing_file", ["search", "--space", "nowhere.yaml"], _nothing,
     "--space 'nowhere.yaml' is not a file nor a shipped space"),
    ("space_missing_data", ["search", "--space", "s.yaml"],
     _files(**{"s.yaml": "data: nowhere\n"}), "data 'nowhere' does not exist"),
    ("search_trials_zero", ["search", "--trials", "0"], _nothing,
     "Invalid value for '--trials': Input should be greater than or equal to 1, but got '0'"),
    ("search_budget_epochs_negative", ["search", "--budget-epochs", "-3"], _nothing,
     "Invalid value for '--budget-epochs': Input should be greater than or equal to 1, but "
     "got '-3'"),
    ("search_timeout_negative", ["search", "--timeout=-1"], _nothing,
     "Invalid value for '--timeout': Input should be greater than or equal to 0.001, but got "
     "'-1'"),
    ("storage_unknown_scheme", ["search", "--storage", f"foo://me:{SECRET}@host/db"], _nothing,
     "storage 'foo://me:***@host/db' cannot be opened"),
    ("storage_not_a_url", ["search", "--storage", "not a url"], _nothing,
     "is not a database URL"),
    ("storage_unreachable", ["search", "--storage",
                             f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"], _nothing,
     "storage 'postgresql://postgres:***@127.0.0.1:1/test' cannot be opened"),
    # The local server trusts every password: an unknown role is the credentials it refuses.
    ("storage_wrong_credentials", ["search", "--storage",
                                   f"postgresql://nobody:{SECRET}@127.0.0.1:5432/test"],
     _nothing, "storage 'postgresql://nobody:***@127.0.0.1:5432/test' cannot be opened"),
    ("study_name_escapes", ["search", "--study", "../../../escape", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "--study '../../../escape' would put its runs outside"),
    ("study_name_absolute", ["search", "--study", "/tmp/escape", "--space", "s.yaml"],
     _files(**{"s.yaml": SPACE}), "--study '/tmp/escape'"),
    # -- export --------------------------------------------------------------------------
    ("export_unknown_study", ["export", "--study", "nope", "--storage", STORE, "--format",
                              "csv", "--output", "t.csv"], _store,
     "no study 'nope' in storage 'sqlite:///store.db'"),
    ("export_no_storage_yet", ["export", "--format", "csv"], _nothing,
     "storage 'sqlite:///studies/autotune.db' does not exist"),
    ("export_missing_folder", ["export", "--format", "yaml", "--output",
                               "no/such/dir/best.yaml"], _nothing,
     "folder 'no/such/dir' does not exist"),
    ("export_output_is_folder", ["export", "--format", "yaml", "--output", "out"],
     _files(**{"out/": ""}), "--output 'out' is a folder; give a file name"),
    ("export_bad_format", ["export", "--format", "toml"], _nothing,
     "--format must be yaml or csv but got 'toml'"),
    # -- report --------------------------------------------------------------------------
    ("report_unknown_study", ["report", "--study", "nope", "--storage", STORE], _store,
     "no study 'nope' in storage 'sqlite:///store.db' (studies there: other)"),
    ("report_out_is_a_file", ["report", "--study", "other", "--storage", STORE, "--out",
                              "plots.txt"], _store_and_file,
     "--out 'plots.txt' is a file; give a folder"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` with a digest of its content ('dir' for a folder)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def test_the_table_is_big_and_covers_every_command() -> None:
    assert len(ROWS) >= 25
    assert len({row[0] for row in ROWS}) == len(ROWS)
    commands = {argv[0] for _, argv, _, _ in ROWS}
    assert commands == {"train", "resume", "diagnose", "search", "export", "report"}


@pytest.mark.parametrize(("case", "argv", "setup", "phrase"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_exit_2_one_line_nothing_written(
        case: str, argv: list[str], setup: Callable[[Path], None], phrase: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTOTUNE_INJECT", raising=False)
    setup(tmp_path)
    before = _tree(tmp_path)
    capsys.readouterr()

    code = main(argv)

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("autotune: error: "), err
    assert phrase in lines[0], err
    assert "Traceback" not in err and SECRET not in err
    assert _tree(tmp_path) == before  # nothing written, no default studies/autotune.db
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize(("command", "spec"), [("train", "nan_loss~2"),
                                               ("search", "spike~x"),
                                               ("search", "boom@3"),
                                               ("train", "nan_loss@\u00b2"),
                                               ("search", "kill@" + "9" * 20)])
def test_a_bad_fault_spec_is_exit_2_before_anything_is_written(
        command: str, spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOTUNE_INJECT", spec)
    (tmp_path / "space.yaml").write_text(SPACE)
    argv = (["train", "--set", "max_tasks=20", "--run-dir", "run"] if command == "train"
            else ["search", "--space", "space.yaml", "--trials", "1"])
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "AUTOTUNE_INJECT" in lines[0] and repr(spec) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


@pytest.mark.parametrize(("name", "value"), [("AUTOTUNE_HEARTBEAT", "1,5,9"),
                                             ("AUTOTUNE_HEARTBEAT", "5,99999999999"),
                                             ("AUTOTUNE_HEARTBEAT", "nan"),
                                             ("AUTOTUNE_STORAGE_RETRY", "inf"),
                                             ("AUTOTUNE_STORAGE_RETRY", "1e400")])
def test_a_bad_storage_variable_is_exit_2_before_anything_is_written(
        name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    (tmp_path / "space.yaml").write_text(SPACE)
    assert main(["search", "--space", "space.yaml", "--trials", "1"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and repr(value) in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]
