"""The trainer's one domain error, and how a message quotes a value a user gave."""

from __future__ import annotations

from typing import Any

EXCERPT = 80
"""The most characters of a value a message quotes."""


class ConfigError(ValueError):
    """Bad input (configuration, data, paths): the CLI turns it into exit code 2.

    The message is one line that names the bad value and what is allowed.
    """


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """`repr(value)`, cut to at most `limit` characters ('...' and the full length when
    cut): what a message quotes of a value, however large the value is."""
    text = value if isinstance(value, str) else None
    if text is not None and len(text) > 4 * limit:
        text = text[:2 * limit]  # repr of a huge string: never build it whole
        shown = repr(text)
        full = len(value)
        return f"{shown[:limit - 3]}... ({full} characters)"
    shown = repr(value if text is None else text)
    if len(shown) <= limit:
        return shown
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{shown[:limit - 3]}...{size}"


PATH_EXCERPT = 400


def quote_path(path: Any) -> str:
    """A path as a message quotes it: whole, unless it is absurdly long (a path is what the
    user needs to find the file, so it gets more room than other values)."""
    return excerpt(str(path), PATH_EXCERPT)
