"""Names and values a user gave, printed as text: never read as rich markup.

A run directory called `run[/]` or a study called `[red]x` is printed as it is spelt
(`rich` would otherwise read the brackets as markup: printed wrong, or a MarkupError
after the work is done).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from autotune.errors import ConfigError, excerpt

__all__ = ["esc", "path_of"]


def esc(value: Any) -> str:
    """`str(value)` with rich markup escaped, for an f-string printed with markup (where
    it is never followed directly by a tag: rich's `escape` doubles a trailing backslash
    for that case, which would print it twice here)."""
    text = str(value)
    escaped = escape(text)
    if text.endswith("\\") and escaped.endswith("\\\\") and not text.endswith("\\\\"):
        escaped = escaped[:-1]
    return escaped


def path_of(value: str, flag: str) -> Path:
    """A path flag's value; an empty one is ConfigError (it would mean the current
    folder, which nobody means by giving nothing)."""
    if not value.strip():
        raise ConfigError(f"{flag} must name a path but got {excerpt(value)}.")
    return Path(value)
