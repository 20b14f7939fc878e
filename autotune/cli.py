"""The `autotune` command: parse, call the library, render, map errors to exit codes.

Exit codes (the contract): 0 done, 1 a bug, 2 bad input (one line, nothing written),
3 diverged and not recovered, 130 interrupted (state saved; `resume` continues).
"""

from __future__ import annotations

import errno
import json
import logging
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.exceptions import TyperException

from autotune import render, search_cli
from trainer.errors import ConfigError, Interrupted

_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM}
EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="Keeps ARC training from diverging: train, resume, diagnose, search.")
out = Console(log_path=False)
err = Console(stderr=True)


def _on_off(value: str, flag: str) -> bool:
    if value not in ("on", "off"):
        raise ConfigError(f"{flag} must be on or off but got {value!r}.")
    return value == "on"


# -- train / resume ---------------------------------------------------------------------

@app.command()
def train(
    config: Annotated[Path | None, typer.Option("--config", help="YAML file of settings")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE, overrides the config file; repeatable")] = None,
    profile: Annotated[str | None, typer.Option(
        help="tiny, default or large (default: tiny on CPU, default on CUDA)")] = None,
    epochs: Annotated[int | None, typer.Option(help="planned epochs")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="where the run is written (default: runs/train-<time>)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    seed: Annotated[int | None, typer.Option(help="seed of everything random")] = None,
    recovery: Annotated[str, typer.Option(help="on or off: recover from divergence")] = "on",
) -> None:
    """Train a model on ARC, recovering from divergence."""
    from autotune.runs import start_run
    from trainer.config import load_yaml, parse_set, resolve

    device_name = _device(device)
    file_values = load_yaml(config) if config is not None else {}
    set_values = parse_set(set_ or [])
    for key, value in (("epochs", epochs), ("seed", seed)):
        if value is not None:
            set_values[key] = value
    set_values["recovery"] = _on_off(recovery, "--recovery")
    cfg = resolve(profile or _default_profile(device_name), file_values, set_values)
    path = run_dir or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    with render.RunProgress(out, cfg.epochs) as progress:
        result = start_run(cfg, path, device_name, progress.hooks())
    render.run_summary(out, result, path)
    raise typer.Exit(render.exit_code(result))


@app.command()
def resume(
    run_dir: Annotated[Path | None, typer.Argument(
        help="a run directory to continue (diverged, interrupted or finished)")] = None,
    epochs: Annotated[int | None, typer.Option(help="extend the run to N epochs")] = None,
    study: Annotated[str | None, typer.Option(help="an interrupted study to continue")] = None,
    storage: Annotated[str | None, typer.Option(help="the study's storage URL")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Continue a diverged or interrupted run, or an interrupted study."""
    if (run_dir is None) == (study is None):
        raise ConfigError("resume takes a RUN_DIR or --study NAME (one of them).")
    if study is not None:
        raise typer.Exit(search_cli.resume_study(out, study, storage))
    from autotune.runs import resume_run

    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs must be >= 1 but got {epochs}.")
    device_name = _device(device)
    with render.RunProgress(out, epochs) as progress:
        result = resume_run(run_dir, epochs, device_name, progress.hooks())
    render.run_summary(out, result, run_dir)
    raise typer.Exit(render.exit_code(result))


def _device(name: str) -> str:
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda but got {name!r}.")
    if name == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; "
                              "use --device cpu or auto.")
    return name


def _default_profile(device: str) -> str:
    import torch
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "default" if cuda else "tiny"


# -- diagnose ---------------------------------------------------------------------------

@app.command()
def diagnose(
    target: Annotated[Path, typer.Argument(help="a run directory, or a CSV / JSON Lines log")],
    json_: Annotated[bool, typer.Option("--json", help="print findings as JSON")] = False,
    lr: Annotated[float | None, typer.Option("--lr", help="intended peak learning rate")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="intended warmup epochs")] = None,
    schedule: Annotated[str | None, typer.Option(help="cosine, linear or constant")] = None,
    epochs: Annotated[int | None, typer.Option(help="intended planned epochs")] = None,
) -> None:
    """Explain why a run diverged (or that it is healthy), with the numbers and the fix."""
    from autotune.diagnose import diagnose_target, render_text

    findings = diagnose_target(target, lr, warmup_epochs, schedule, epochs)
    if json_:
        typer.echo(json.dumps({"findings": [f.to_dict() for f in findings]}, indent=2))
    else:
        typer.echo(render_text(findings))


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
    except (KeyboardInterrupt, Interrupted, typer.Abort):
        err.print("autotune: interrupted; what was saved is kept: `autotune resume` "
                  "continues.", markup=False, highlight=False, soft_wrap=True)
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
