from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autotune.errors import ConfigError
from autotune.search.space import Choice, Range, load_space, parse_space, shipped, space_path

GOOD: dict[str, Any] = {
    "learning_rate": {"low": "1e-4", "high": 3.0e-3, "log": True},
    "warmup_epochs": {"low": 0, "high": 2},
    "label_smoothing": {"choices": [0, 0.1]},
    "use_augmentation": {"choices": [True, False]},
    "batch_size": {"choices": [16, 32, 64]},
    "epochs": {"low": 2, "high": 4},
    "max_tasks": 40,
}


def test_parse_reads_ranges_choices_and_fixed_values() -> None:
    space = parse_space(GOOD, "good.yaml")
    assert space.names == ("learning_rate", "warmup_epochs", "label_smoothing",
                           "use_augmentation", "batch_size", "epochs")
    assert space.param("learning_rate") == Range("learning_rate", 1e-4, 3e-3, log=True)
    assert space.param("epochs") == Range("epochs", 2, 4, integer=True)
    assert space.param("label_smoothing") == Choice("label_smoothing", (0.0, 0.1))
    assert space.fixed == {"max_tasks": 40}
    assert parse_space(space.to_yaml()) == parse_space(GOOD)


def test_suggest_samples_inside_the_space_with_the_right_types() -> None:
    space = parse_space(GOOD)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = space.suggest(trial)
        assert 1e-4 <= params["learning_rate"] <= 3e-3
        assert isinstance(params["epochs"], int) and 2 <= params["epochs"] <= 4
        assert params["use_augmentation"] in (True, False)
        assert space.project(params) == params
        config = space.config(params, "tiny")
        assert config.max_tasks == 40 and config.batch_size == params["batch_size"]
        study.tell(trial, 1.0)


def test_config_precedence_profile_fixed_overrides_sampled() -> None:
    space = parse_space({"learning_rate": {"low": 1e-3, "high": 2e-3}, "epochs": 6})
    config = space.config({"learning_rate": 1.5e-3}, "tiny", {"epochs": 2})
    assert (config.learning_rate, config.epochs, config.model) == (1.5e-3, 2, "tiny")


def test_project_rejects_values_outside() -> None:
    space = parse_space(GOOD)
    inside = {"learning_rate": 1e-3, "warmup_epochs": 1.0, "label_smoothing": 0.0,
              "use_augmentation": True, "batch_size": 32, "epochs": 3}
    assert space.project(inside) == inside
    assert space.project({**inside, "learning_rate": 3e-5}) is None
    assert space.project({**inside, "batch_size": 48}) is None
    assert space.project({**inside, "use_augmentation": 1}) is None


@pytest.mark.parametrize(("mapping", "needle"), [
    ({"learning_rat": {"low": 1e-4, "high": 1e-3}}, "Did you mean 'learning_rate'"),
    ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "learning_rate has low 0.01 > high"),
    ({"batch_size": {"choices": []}}, "batch_size.choices is empty"),
    ({"learning_rate": {"low": 0.0, "high": 1e-3, "log": True}}, "low must be > 0"),
    ({"learning_rate": {"low": "fast", "high": 1e-3}}, "learning_rate.low must be a number"),
    ({"learning_rate": {"low": 1e-4}}, "learning_rate needs both low and high"),
    ({"learning_rate": {"low": 1e-4, "hi": 1e-3}}, "unknown field 'hi'"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3, "log": "yes"}}, "learning_rate.log"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3, "choices": [1e-3]}}, "both choices"),
    ({"batch_size": {"low": 8.5, "high": 64}}, "batch_size.low must be an integer"),
    ({"batch_size": {"choices": [16, "big"]}}, "batch_size.choices must be a number"),
    ({"batch_size": {"choices": 16}}, "batch_size.choices must be a list"),
    ({"use_augmentation": {"low": 0, "high": 1}}, "use_augmentation is not numeric"),
    ({"schedule": {"choices": ["cosine", "wavy"]}}, "schedule must be one of"),
    ({"label_smoothing": {"low": 0.0, "high": 1.5}}, "high of label_smoothing"),
    ({"epochs": "six"}, "epochs must be an integer"),
    ({"warmup_epochs": {"low": 0, "high": 2, "step": -1}}, "step must be > 0"),
    ([1, 2], "must be a mapping"),
])
def test_bad_spaces_name_the_key(mapping: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_space(mapping, "bad.yaml")
    message = str(info.value)
    assert needle in message and "bad.yaml" in message
    assert "\n" not in message


def test_shipped_spaces_load_and_name_resolution(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"default", "aggressive_lr", "lr_only"} <= set(shipped())
    default = load_space(None)
    assert {"learning_rate", "warmup_epochs", "label_smoothing", "use_augmentation",
            "weight_decay", "batch_size", "grad_clip"} <= set(default.names)
    lr = default.param("learning_rate")
    assert isinstance(lr, Range) and lr.log and lr.high == pytest.approx(3e-3)
    aggressive = load_space("aggressive_lr")
    high = aggressive.param("learning_rate")
    assert isinstance(high, Range) and high.high >= 3e-2
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"learning_rate": {"low": 1e-3, "high": 2e-3}}))
    assert space_path("mine.yaml") == Path("mine.yaml")
    assert load_space("mine.yaml").names == ("learning_rate",)
    with pytest.raises(ConfigError, match="not a file nor a shipped space"):
        load_space("nothing_here.yaml")
    (tmp_path / "broken.yaml").write_text("learning_rate: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space("broken.yaml")
