"""The `train` and `resume` commands: parse, call `autotune.recovery.runs`, render."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from autotune.cli import progress as render
from autotune.cli import search_commands
from autotune.cli.text import path_of
from autotune.errors import ConfigError, excerpt, quote_path
from autotune.recovery.settings import RecoveryMode

__all__ = ["register"]

def _device(name: str) -> str:
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda but got {excerpt(name)}.")
    if name == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available; "
                              "use --device cpu or auto.")
    return name


def _run_dir(value: str | None) -> Path:
    """The run directory of `train` (refused before anything is written)."""
    if value is None:
        return Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    path = path_of(value, "--run-dir")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {quote_path(path)} is a file, not a directory.")
    if (path / "config.yaml").exists():
        raise ConfigError(f"run directory {quote_path(path)} already holds a run; use "
                          f"`autotune resume {path}` or another --run-dir.")
    return path


def register(app: typer.Typer, console: Console) -> None:
    """Add `train` and `resume` to the app."""

    @app.command()
    def train(
        config: Annotated[Path | None, typer.Option(
            "--config", help="YAML file of settings")] = None,
        set_: Annotated[list[str] | None, typer.Option(
            "--set", help="KEY=VALUE, overrides the config file; repeatable")] = None,
        profile: Annotated[str | None, typer.Option(
            help="tiny, default or large (default: tiny on CPU, default on CUDA)")] = None,
        epochs: Annotated[int | None, typer.Option(help="planned epochs")] = None,
        run_dir: Annotated[str | None, typer.Option(
            "--run-dir", help="where the run is written (default: runs/train-<time>)")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
        seed: Annotated[int | None, typer.Option(help="seed of everything random")] = None,
        recovery: Annotated[str, typer.Option(
            help="on (recover), off (stop at the first divergence, exit 3) or watch "
                 "(warn, change nothing)")] = "on",
    ) -> None:
        """Train a model on ARC, recovering from divergence."""
        from autotune.recovery.runs import resolve_run, start_run
        from autotune.recovery.settings import SUPERVISOR_KEYS
        from trainer.config import load_yaml, parse_set
        from trainer.loop import default_profile

        if recovery not in {m.value for m in RecoveryMode}:
            raise ConfigError(f"--recovery must be on, off or watch but got {recovery!r}.")
        device_name = _device(device)
        file_values = load_yaml(config) if config is not None else {}
        set_values = parse_set(set_ or [], SUPERVISOR_KEYS)
        for key, value in (("epochs", epochs), ("seed", seed)):
            if value is not None:
                set_values[key] = value
        set_values["recovery"] = recovery
        cfg = resolve_run(profile or default_profile(device_name), file_values,
                          set_values)
        path = _run_dir(run_dir)
        with render.RunProgress(console) as progress:
            result = start_run(cfg, path, device_name, progress.hooks())
        render.run_summary(console, result, path)
        raise typer.Exit(render.exit_code(result))

    @app.command()
    def resume(
        run_dir: Annotated[str | None, typer.Argument(
            help="a run directory to continue (diverged, interrupted or finished)")] = None,
        epochs: Annotated[int | None, typer.Option(help="extend the run to N epochs")] = None,
        study: Annotated[str | None, typer.Option(
            help="an interrupted study to continue")] = None,
        storage: Annotated[str | None, typer.Option(help="the study's storage URL")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    ) -> None:
        """Continue a diverged or interrupted run, or an interrupted study."""
        if (run_dir is None) == (study is None):
            raise ConfigError("resume takes a RUN_DIR or --study NAME (one of them).")
        if study is not None:
            raise typer.Exit(search_commands.resume_study(console, study, storage))
        from autotune.recovery.runs import resume_run

        assert run_dir is not None  # one of the two, and not --study
        if epochs is not None and epochs < 1:
            raise ConfigError(f"--epochs must be >= 1 but got {epochs}.")
        device_name = _device(device)
        path = path_of(run_dir, "RUN_DIR")
        with render.RunProgress(console) as progress:
            result = resume_run(path, epochs, device_name, progress.hooks())
        render.run_summary(console, result, path)
        raise typer.Exit(render.exit_code(result))
