"""What a user hands us is read within bounds: one strict YAML loader, regular files only,
at most a bound of bytes, and messages that quote at most an excerpt of a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from trainer.config import load_yaml, parse_set
from trainer.errors import ConfigError, excerpt
from trainer.userfiles import StrictLoader, load_yaml_text, read_bytes, read_text

# A few hundred bytes that a plain safe_load expands to 9**9 list items.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


def test_nested_aliases_are_refused_not_expanded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(LAUGHS)
    assert len(LAUGHS) < 1000
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    message = str(caught.value)
    assert "aliases" in message and "not allowed" in message and len(message) < 300


def test_a_duplicate_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("learning_rate: 0.1\nepochs: 3\nlearning_rate: 0.001\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'learning_rate' \(line 3"):
        load_yaml(path)
    with pytest.raises(yaml.YAMLError, match="duplicate key 'b'"):
        load_yaml_text("a: {b: 1, b: 2}\n")


def test_the_strict_loader_still_reads_plain_yaml_and_refuses_python_tags() -> None:
    assert load_yaml_text("a: 1\nb: [1, 2]\nc: {d: e}\n") == {"a": 1, "b": [1, 2],
                                                            "c": {"d": "e"}}
    assert issubclass(StrictLoader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        load_yaml_text("a: !!python/object/apply:os.system ['true']\n")


def test_set_values_are_read_with_the_same_loader() -> None:
    # An alias in a --set value is no YAML value: it stays the string it was.
    assert parse_set(["data=*x"]) == {"data": "*x"}
    assert parse_set(["learning_rate=1e-3"]) == {"learning_rate": 1e-3}


def test_special_files_are_refused_without_reading_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_bytes("/dev/zero", "config file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever: it is not
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_yaml(fifo)
    with pytest.raises(ConfigError, match="is a folder"):
        read_text(tmp_path, "config file")


def test_a_file_over_the_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * 2000)
    assert read_text(path, "config file", limit=5000).startswith("a: 1")
    with pytest.raises(ConfigError, match="is larger than 1000 bytes"):
        read_text(path, "config file", limit=1000)


def test_an_excerpt_is_short_whatever_the_value() -> None:
    assert excerpt("lr") == "'lr'"
    assert excerpt(0.5) == "0.5"
    huge = "x" * 10_000_000
    shown = excerpt(huge)
    assert len(shown) < 110 and shown.endswith("(10000000 characters)")
    assert len(excerpt(list(range(100_000)))) <= 80


def test_a_huge_value_in_a_configuration_is_quoted_as_an_excerpt(tmp_path: Path) -> None:
    from trainer.config import from_dict

    with pytest.raises(ConfigError) as caught:
        from_dict({"learning_rate": "fast" * 100_000})
    assert len(str(caught.value)) < 200
