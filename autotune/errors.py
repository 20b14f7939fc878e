"""autotune's errors: bad input (`ConfigError`, exit 2) and an interruption (exit 130).

`ConfigError` is defined once, in `trainer.errors` (the trainer knows nothing of autotune,
and raises it for a bad configuration or data path); autotune re-exports it here, and its
own modules import it from here only.
"""

from __future__ import annotations

from trainer.errors import ConfigError, excerpt, quote_path

__all__ = ["ConfigError", "Interrupted", "excerpt", "quote_path"]


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop where we are, keep what was saved (exit code 130).

    A BaseException like KeyboardInterrupt, but its own class, so that no library in
    between (the CLI parser turns KeyboardInterrupt into a silent exit code) swallows it.
    """
