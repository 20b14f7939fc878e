"""The `autotune` command: parse, call the library, render, map errors to exit codes.

Exit codes (the contract): 0 done, 1 a bug, 2 bad input (one line, nothing written),
3 diverged and not recovered, 130 interrupted (state saved; `resume` continues).
"""

from __future__ import annotations

import errno
import logging
import signal
import sys
import traceback
from typing import Any

import typer
from rich.console import Console
from typer.exceptions import TyperException

from autotune.cli import diagnose_command, run_commands
from autotune.cli import search_commands as search_cli
from autotune.errors import ConfigError, Interrupted
from autotune.search.study.retry import StorageUnavailable

_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM}
EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Keeps ARC training from diverging: train, resume, diagnose, search.")
out = Console(log_path=False)
err = Console(stderr=True)


run_commands.register(app, out)
diagnose_command.register(app)
search_cli.register(app, out)


# -- entry point ------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    logging.basicConfig(level=logging.WARNING, format="autotune: %(message)s")
    previous = _terminate_as_interrupt()
    try:
        result: Any = app(args=argv, prog_name="autotune", standalone_mode=False)
        return int(result or 0)
    except typer.Exit as exc:
        return exc.exit_code
    except ConfigError as exc:
        err.print(f"autotune: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_INPUT
    except StorageUnavailable as exc:  # the storage, not the user: one line, exit 1
        err.print(f"autotune: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_BUG
    except (KeyboardInterrupt, Interrupted, typer.Abort):
        err.print(interrupted_message(sys.argv[1:] if argv is None else argv), markup=False,
                  highlight=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS:
            return _bug(exc)
        # The machine, not the user: a full disk, a quota, a read-only or forbidden folder.
        err.print(f"autotune: cannot write {exc.filename or ''}: {exc.strerror}; nothing "
                  f"half-written was kept.", markup=False, highlight=False, soft_wrap=True)
        return EXIT_BUG
    except TyperException as exc:  # usage errors of the parser (typer's own click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = with_given_value(message, getattr(exc, "param", None),
                                   sys.argv[1:] if argv is None else argv)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `autotune`: the help
            err.print(message, markup=False, highlight=False)
            return EXIT_INPUT
        err.print(f"autotune: error: {message}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_INPUT
    except Exception as exc:  # a bug: one line, then the traceback
        return _bug(exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def with_given_value(message: str, param: Any, argv: list[str]) -> str:
    """A parser's complaint about an option's value (typer's bounds say what is allowed,
    not what was given) with the value the command line gave it."""
    opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
    value = None
    for i, arg in enumerate(argv):
        if arg in opts and i + 1 < len(argv):
            value = argv[i + 1]
        elif "=" in arg and arg.split("=", 1)[0] in opts:
            value = arg.split("=", 1)[1]
    if value is None or repr(value) in message:
        return message
    return f"{message.rstrip('.')}, but got {value!r}"


RESUMABLE = ("train", "resume", "search")
"""The commands whose interruption `autotune resume` continues."""


def interrupted_message(argv: list[str]) -> str:
    """What an interrupted command says: only those that saved a state point to resume."""
    command = next((a for a in argv if not a.startswith("-")), "")
    if command in RESUMABLE:
        return "autotune: interrupted; what was saved is kept: `autotune resume` continues."
    return "autotune: interrupted; nothing was changed."


def _bug(exc: BaseException) -> int:
    err.print(f"autotune: unexpected failure: {type(exc).__name__}: {exc}", markup=False,
              highlight=False, soft_wrap=True)
    traceback.print_exception(exc, file=sys.stderr)
    return EXIT_BUG


def _terminate_as_interrupt() -> dict[int, Any]:
    """Ctrl-C and SIGTERM (a scheduler's pre-emption) stop the same way: exit 130.

    Returns the handlers it replaced, for `main` to put back.
    """
    def _raise(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _raise)
    except ValueError:  # not the main thread (an embedding application's business)
        pass
    return previous


def entry() -> None:
    sys.exit(main())
