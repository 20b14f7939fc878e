"""The trainer's one domain error: bad input that a user can fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input (configuration, data, paths): the CLI turns it into exit code 2.

    The message is one line that names the bad value and what is allowed.
    """


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop where we are, keep what was saved (exit code 130).

    A BaseException like KeyboardInterrupt, but its own class, so that no library in
    between (the CLI parser turns KeyboardInterrupt into a silent exit code) swallows it.
    """
