"""Property-based: random and malformed input to every reader of user input gives exit 2
(or a finding), never a traceback. The readers: configurations (`--config`, `--set`),
search spaces (`--space`), environment variables (`AUTOTUNE_INJECT`, `AUTOTUNE_HEARTBEAT`,
`AUTOTUNE_STORAGE_RETRY`) and training logs (`diagnose`).

Bounded (a fixed number of examples each, derandomized) so that the file runs in CI in
well under a minute.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotune.cli.app import main
from autotune.errors import ConfigError
from autotune.search.space import load_space
from autotune.search.study.plan import _probe
from autotune.search.study.retry import MAX_RETRY_S, retry_bound
from autotune.search.study.storage import HEARTBEAT_MAX, Heartbeat
from trainer.config import KEYS
from trainer.inject import Injector

# Fixtures (capsys, monkeypatch) are shared by the examples on purpose: each example reads
# what it printed and sets what it changes.
CHECKS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
BOUNDED = settings(max_examples=60, deadline=None, derandomize=True,
                   suppress_health_check=CHECKS)

# -- strategies ---------------------------------------------------------------------------

NAMES = st.sampled_from([*KEYS, "max_loss_increase", "max_recoveries", "recovery", "extra_epochs",
                         "alarm_only",
                         "keep_checkpoints", "lerning_rate", "", "x" * 300])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["cosine", "nan", "inf", "-inf", "1e-3", "1e400", "tiny", "on", "[/]"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["low", "high", "log", "step", "choices", "lo"]), inner, max_size=4)), max_leaves=8)
MAPPINGS = st.dictionaries(NAMES, VALUES, max_size=6)
YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.builds(lambda m: yaml.safe_dump(m, allow_unicode=True), MAPPINGS),
    st.sampled_from(["a: &x [1]\nb: *x\n", "a: 1\na: 2\n", "!!python/none ''", "[[[[",
                     "- 1\n- 2\n", "epochs: {low: 1}\n", "\x00", "\ufeffa: 1"]))
# What an environment variable can hold (any text but NUL), and lists of the parts of ours.
ENV_PARTS = st.lists(st.one_of(
    st.integers(min_value=-5, max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan_loss", "inf_grad", "spike", "kill", "@", "~", "²", "1e400", ""])),
    max_size=6)
ENV_TEXT = st.one_of(
    st.text(st.characters(exclude_characters="\x00"), max_size=60),
    ENV_PARTS.map(lambda parts: ",".join(parts) if len(parts) % 2 else "@".join(parts)))
LOG_NAMES = st.sampled_from(["epoch", "step", "loss", "train_loss", "val_loss", "lr",
                             "grad_norm", "train/loss_step", "lr-AdamW", "global_epoch",
                             "x", ""])
CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.integers(min_value=-10**30, max_value=10**30).map(str),
                  st.text(alphabet="0123456789.-e,;\t\"' naif", max_size=8))


@st.composite
def logs(draw: st.DrawFn) -> tuple[str, str]:
    """(file name, text) of a training log: CSV, JSON Lines, trainer_state.json, text."""
    kind = draw(st.sampled_from(["csv", "jsonl", "hf", "text", "raw"]))
    names = draw(st.lists(LOG_NAMES, min_size=1, max_size=5))
    rows = draw(st.lists(st.lists(CELLS, min_size=len(names), max_size=len(names)),
                         max_size=8))
    if kind == "csv":
        sep = draw(st.sampled_from([",", "\t", ";"]))
        return "log.csv", "\n".join(sep.join(r) for r in [names, *rows]) + "\n"
    if kind == "jsonl":
        records = [dict(zip(names, (_number(c) for c in r))) for r in rows]
        return "log.jsonl", "".join(json.dumps(r) + "\n" for r in records)
    if kind == "hf":
        history = [dict(zip(names, (_number(c) for c in r))) for r in rows]
        return "trainer_state.json", json.dumps({"log_history": history, "global_step": 3})
    if kind == "text":
        return "train.log", "\n".join(" ".join(f"{n}={c}" for n, c in zip(names, r))
                                      for r in rows)
    return "log.txt", draw(st.text(max_size=300))


def _number(cell: str) -> Any:
    try:
        value = float(cell)
    except ValueError:
        return cell
    return value if math.isfinite(value) else cell


@contextmanager
def _folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str],
         allowed: tuple[int, ...] = (2,)) -> None:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code in allowed, err
    assert "Traceback" not in err and "unexpected failure" not in err, err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


# -- configurations -------------------------------------------------------------------------

@BOUNDED
@given(text=YAML_TEXT)
def test_a_config_file_is_read_or_exit_2(text: str, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with _folder() as root:
        monkeypatch.chdir(root)
        (root / "c.yaml").write_text(text)
        # data=nowhere: a configuration that passes is exit 2 at the data, nothing trains.
        _cli(["train", "--config", "c.yaml", "--set", "data=nowhere"], capsys)
        assert sorted(p.name for p in root.iterdir()) == ["c.yaml"]


@BOUNDED
@given(items=st.lists(st.one_of(st.text(max_size=40), st.builds(
    lambda k, v: f"{k}={v}", NAMES, st.one_of(st.text(max_size=30), SCALARS.map(str)))),
    max_size=4))
def test_set_values_are_read_or_exit_2(items: list[str], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with _folder() as root:
        monkeypatch.chdir(root)
        argv = ["train"] + [a for item in items for a in ("--set", item)]
        _cli([*argv, "--set", "data=nowhere"], capsys)
        assert list(root.iterdir()) == []


# -- spaces -----------------------------------------------------------------------------------

@BOUNDED
@given(text=YAML_TEXT)
def test_a_space_is_read_or_config_error(text: str) -> None:
    with _folder() as root:
        (root / "s.yaml").write_text(text)
        try:
            space = load_space(str(root / "s.yaml"))
            _probe(space, "tiny", {})  # what `search` resolves before the study exists
        except ConfigError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 2000


# -- environment variables ---------------------------------------------------------------

@BOUNDED
@given(raw=ENV_TEXT, seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_autotune_inject_is_parsed_or_config_error(raw: str, seed: int) -> None:
    try:
        injector = Injector.parse(raw, seed)
    except ConfigError as exc:
        assert "AUTOTUNE_INJECT" in str(exc)
        return
    for step in range(0, 8):
        injector.fires(step, "kill")  # drawing rate faults never fails


@BOUNDED
@given(raw=ENV_TEXT)
def test_autotune_heartbeat_is_bounded_or_config_error(
        raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_HEARTBEAT", raw)
    try:
        beat = Heartbeat.from_env()
    except ConfigError as exc:
        assert "heartbeat" in str(exc).lower()
        return
    assert 1 <= beat.interval < beat.grace <= HEARTBEAT_MAX


@BOUNDED
@given(raw=ENV_TEXT)
def test_autotune_storage_retry_is_bounded_or_config_error(raw: str) -> None:
    try:
        bound = retry_bound(raw)
    except ConfigError as exc:
        assert "AUTOTUNE_STORAGE_RETRY" in str(exc)
        return
    assert 0 <= bound <= MAX_RETRY_S and math.isfinite(bound)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=CHECKS)
@given(inject=ENV_TEXT, heartbeat=ENV_TEXT)
def test_bad_variables_are_exit_2_for_the_cli(
        inject: str, heartbeat: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOTUNE_INJECT", inject)
    monkeypatch.setenv("AUTOTUNE_HEARTBEAT", heartbeat)
    with _folder() as root:
        monkeypatch.chdir(root)
        _cli(["search", "--space", "nowhere.yaml"], capsys)  # exit 2 whichever is first


# -- logs -------------------------------------------------------------------------------------

@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=CHECKS)
@given(log=logs())
def test_diagnose_of_any_log_is_findings_or_exit_2(
        log: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    name, text = log
    with _folder() as root:
        (root / name).write_text(text)
        _cli(["diagnose", str(root / name), "--json"], capsys, allowed=(0, 2))


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=CHECKS)
@given(log=logs(), config=YAML_TEXT, events=st.lists(st.dictionaries(
    st.sampled_from(["kind", "reason", "epoch", "global_epoch", "changes", "step"]),
    SCALARS, max_size=4), max_size=3))
def test_diagnose_of_any_run_directory_is_findings_or_exit_2(
        log: tuple[str, str], config: str, events: list[dict[str, Any]],
        capsys: pytest.CaptureFixture[str]) -> None:
    with _folder() as root:
        run = root / "run"
        run.mkdir()
        (run / "config.yaml").write_text(config)
        (run / "metrics.jsonl").write_text(log[1])
        (run / "events.jsonl").write_text("".join(json.dumps(e, default=str) + "\n"
                                                  for e in events))
        _cli(["diagnose", str(run)], capsys, allowed=(0, 2))
        assert sorted(os.listdir(run)) == ["config.yaml", "events.jsonl", "metrics.jsonl"]
