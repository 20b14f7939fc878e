"""The trainer's one domain error: bad input that a user can fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input (configuration, data, paths): the CLI turns it into exit code 2.

    The message is one line that names the bad value and what is allowed.
    """
