"""Atomic writes: the mode a plain open() gives, and errors that name the target."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from autotune.atomic import atomic_write_text


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_an_atomic_write_gets_the_mode_the_umask_allows(tmp_path: Path,
                                                        umask_022: None) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_a_folder_that_cannot_be_written_is_named_by_the_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, "Read-only file system",
                      str(tmp_path / ".config.yaml.abc123.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as caught:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
    assert caught.value.filename == str(tmp_path / "config.yaml")
    assert caught.value.errno == errno.EROFS
