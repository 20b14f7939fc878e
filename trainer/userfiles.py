"""Reading what a user hands us: bounded reads and one strict YAML loader.

`read_text`/`read_bytes` read a regular file only (a FIFO, a device such as /dev/zero, a
folder is ConfigError) and at most a bound of bytes, so no input can make a reader read or
hold without limit. `load_yaml_text` is the one YAML loader of every file and `--set`
value: safe tags only, no aliases (a few lines of nested aliases expand to gigabytes: the
"billion laughs"), no duplicate keys (the last one would silently win).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node

from trainer.errors import ConfigError, excerpt, quote_path

MIB = 1024 * 1024
CONFIG_LIMIT = 1 * MIB
"""A configuration or search space file."""
LOG_LIMIT = 512 * MIB
"""A training log, a task file, a run's metrics."""


def _open_regular(path: Path, what: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{what} {quote_path(path)} does not exist.") from None
    except OSError as exc:
        raise ConfigError(f"{what} {quote_path(path)} cannot be read: "
                          f"{exc.strerror or exc}.") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise ConfigError(f"{what} {quote_path(path)} is {kind}; give a file.")
    return fd


def read_bytes(path: str | Path, what: str = "file", limit: int = LOG_LIMIT) -> bytes:
    """The bytes of the regular file `path`; ConfigError when it is larger than `limit`."""
    fd = _open_regular(Path(path), what)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {quote_path(path)} cannot be read: "
                          f"{exc.strerror or exc}.") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {quote_path(path)} is larger than {_size(limit)}; "
                          f"give a smaller file.")
    return data


def read_text(path: str | Path, what: str = "file", limit: int = LOG_LIMIT) -> str:
    """The UTF-8 text of the regular file `path` (see `read_bytes`)."""
    data = read_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {quote_path(path)} is not UTF-8 text.") from None


def _size(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB else f"{limit} bytes"


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and without duplicate keys."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise ComposerError(None, None, f"YAML aliases (*{event.anchor}) are not "
                                "allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # an unhashable key: the safe constructor refuses it
                if duplicate:
                    raise ConstructorError(None, None, f"duplicate key {excerpt(key, 40)}",
                                           key_node.start_mark)
        return super().construct_mapping(node, deep)


def yaml_error(exc: yaml.YAMLError) -> str:
    """The first line of a YAML error, with where it is when known."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return _clip(f"{problem}{where}")
    lines = str(exc).strip().splitlines()
    return _clip(lines[0] if lines else type(exc).__name__)


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_yaml_text(text: str) -> Any:
    """YAML text with `StrictLoader` (yaml.YAMLError on bad input, see `yaml_error`)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, what: str = "config file",
                   limit: int = CONFIG_LIMIT) -> Any:
    """The document of a YAML file, read within `limit`; ConfigError naming the file."""
    text = read_text(path, what, limit)
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {quote_path(path)} is not valid YAML: "
                          f"{yaml_error(exc)}.") from None
    except RecursionError:
        raise ConfigError(f"{what} {quote_path(path)} is nested too deeply.") from None
