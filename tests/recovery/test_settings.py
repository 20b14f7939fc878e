"""The supervisor's settings and an ARC run's flat configuration
(autotune/recovery/settings.py, autotune/recovery/runs.py)."""

from __future__ import annotations

import pytest

from autotune.errors import ConfigError
from autotune.recovery.runs import RunConfig, resolve_run
from autotune.recovery.settings import RecoveryMode, SupervisorConfig, split


@pytest.mark.parametrize(("value", "mode"), [
    ("on", RecoveryMode.ON), ("off", RecoveryMode.OFF), ("watch", RecoveryMode.WATCH),
    (True, RecoveryMode.ON), (False, RecoveryMode.OFF),   # run files of older versions
])
def test_recovery_modes(value: object, mode: RecoveryMode) -> None:
    assert SupervisorConfig(recovery=value).recovery is mode


@pytest.mark.parametrize(("values", "message"), [
    ({"recovery": "maybe"}, "recovery must be on, off or watch but got 'maybe'."),
    ({"max_recoveries": -1}, "max_recoveries must be >= 0 but got -1."),
    ({"max_recoveries": 1.5}, "max_recoveries must be an integer but got 1.5."),
    ({"keep_checkpoints": 1}, "keep_checkpoints must be >= 2"),
    ({"max_loss_increase": 0}, "max_loss_increase must be > 0 but got 0."),
    ({"max_loss_increase": "x"}, "max_loss_increase must be a number but got 'x'."),
    ({"extra_epochs": -1}, "extra_epochs must be an integer >= 0 or null but got -1."),
    ({"extra_epochs": 2.5}, "extra_epochs must be an integer >= 0 or null but got 2.5."),
    ({"extra_epochs": True}, "extra_epochs must be an integer >= 0 or null but got True."),
    ({"alarm_only": ["overfit"]}, "alarm_only must be a list of reasons (nonfinite_loss, "
                                  "nonfinite_grad, loss_increase, loss_spike, grad_explosion, "
                                  "overfitting, collapsed) but got ['overfit']."),
    ({"alarm_only": 3}, "alarm_only must be a list of reasons"),
])
def test_bad_settings_name_the_value(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SupervisorConfig(**values)
    assert message in str(info.value)


def test_alarm_only_reads_a_list_or_one_reason_and_writes_a_list() -> None:
    assert SupervisorConfig().alarm_only == ()
    assert SupervisorConfig(alarm_only="overfitting").alarm_only == ("overfitting",)
    both = SupervisorConfig(alarm_only=["overfitting", "collapsed", "overfitting"])
    assert both.alarm_only == ("overfitting", "collapsed")
    assert both.to_dict()["alarm_only"] == ["overfitting", "collapsed"]  # plain YAML
    _, again = split(both.to_dict())
    assert again == both


def test_a_flat_run_mapping_splits_into_trainer_and_supervisor() -> None:
    rest, supervisor = split({"learning_rate": 0.01, "max_recoveries": 6, "recovery": "off"})
    assert rest == {"learning_rate": 0.01}
    assert (supervisor.max_recoveries, supervisor.recovery) == (6, RecoveryMode.OFF)


def test_run_config_round_trips_and_names_typos() -> None:
    config = resolve_run("tiny", {"max_recoveries": 2}, {"learning_rate": 0.01})
    again = RunConfig.from_dict(config.to_dict())
    assert again == config and again.supervisor.max_recoveries == 2
    with pytest.raises(ConfigError, match="Did you mean 'max_recoveries'"):
        RunConfig.from_dict({"max_recoverie": 2})
