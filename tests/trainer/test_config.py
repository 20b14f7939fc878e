"""TrainConfig: good and bad inputs, through the library and the CLI (exit code + message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autotune.cli.app import main
from autotune.recovery.rundir import write_yaml
from trainer.config import TrainConfig, from_dict, load_yaml, parse_set, resolve
from trainer.errors import ConfigError


@pytest.mark.parametrize("values, expected", [
    ({"learning_rate": 3e-4}, {"learning_rate": 3e-4}),
    ({"warmup_epochs": 0.5, "schedule": "linear"}, {"warmup_epochs": 0.5, "schedule": "linear"}),
    ({"epochs": 3.0}, {"epochs": 3}),                      # a whole float is an integer
    ({"learning_rate": 1}, {"learning_rate": 1.0}),        # an integer is a number
    ({"use_augmentation": False, "label_smoothing": 0.1},
     {"use_augmentation": False, "label_smoothing": 0.1}),
    ({"skip_batches": [5, 3, 3]}, {"skip_batches": [3, 5]}),
    ({"data": "arcagi2"}, {"data": "arcagi2"}),
])
def test_good_values(values: dict[str, object], expected: dict[str, object]) -> None:
    config = from_dict(values)
    for key, value in expected.items():
        assert getattr(config, key) == value


@pytest.mark.parametrize("values, message", [
    ({"learning_rat": 1e-3}, "unknown configuration key 'learning_rat'. Did you mean "
                             "'learning_rate'?"),
    ({"learning_rate": "fast"}, "learning_rate must be a number but got 'fast'."),
    ({"learning_rate": 0}, "learning_rate must be > 0 and <= 100 but got 0.0."),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
    ({"epochs": 2.5}, "epochs must be an integer but got 2.5."),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"schedule": "step"}, "schedule must be one of cosine, linear, constant but got 'step'."),
    ({"use_augmentation": "yes"}, "use_augmentation must be true or false but got 'yes'."),
    ({"label_smoothing": 1.0}, "label_smoothing must be >= 0 and <= 0.99 but got 1.0."),
    ({"batch_size": True}, "batch_size must be an integer but got True."),
    ({"skip_batches": [-1]}, "skip_batches must be a list of step numbers >= 0"),
])
def test_bad_values(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(values)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_profiles_and_precedence(tmp_path: Path) -> None:
    tiny = resolve("tiny")
    assert (tiny.model, tiny.max_grid) == ("tiny", 10)
    assert resolve("default").model == "default"
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 0.01\nepochs: 3\n")
    config = resolve("tiny", load_yaml(path), parse_set(["epochs=5", "schedule=linear"]))
    assert (config.learning_rate, config.epochs, config.schedule) == (0.01, 5, "linear")


def test_parse_set_reads_yaml_scalars() -> None:
    assert parse_set(["learning_rate=1e-3", "use_augmentation=false", "schedule=cosine"]) == {
        "learning_rate": 1e-3, "use_augmentation": False, "schedule": "cosine"}


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = TrainConfig(learning_rate=5e-4, skip_batches=[3, 4])
    write_yaml(config.to_dict(), tmp_path / "c.yaml", "a header\nsecond line")
    text = (tmp_path / "c.yaml").read_text()
    assert text.startswith("# a header\n# second line\n")
    assert from_dict(load_yaml(tmp_path / "c.yaml")) == config


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("learning_rate: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_yaml(path)
    assert not Path("pwned").exists()


@pytest.mark.parametrize("args, message", [
    (["--set", "learning_rat=0.1"], "Did you mean 'learning_rate'?"),
    (["--set", "learning_rate=abc"], "learning_rate must be a number but got 'abc'."),
    (["--set", "noequals"], "--set takes KEY=VALUE but got 'noequals'."),
    (["--profile", "huge"], "--profile must be one of tiny, default, large but got 'huge'."),
    (["--recovery", "maybe"], "--recovery must be on, off or watch but got 'maybe'."),
    (["--device", "tpu"], "--device must be auto, cpu or cuda but got 'tpu'."),
    (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist."),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--bogus"], "No such option: --bogus"),
])
def test_cli_bad_input_exit_2(args: list[str], message: str, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--run-dir", "r", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written
