"""Hostile and careless input to a search: secrets in every URL form, names as markup,
more jobs than trials, seeds at the edge of their range."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest
from rich.console import Console

from autotune import cli
from autotune.cli import search_commands
from autotune.cli.progress import run_summary
from autotune.events import RunStatus
from autotune.recovery.supervisor import RunResult
from autotune.report.export import export_yaml
from autotune.search import outcome
from autotune.search.outcome import SearchOutcome
from autotune.search.study.plan import SEED_MAX, SearchSettings, StudyPlan, prepare
from autotune.search.study.workers import make_sampler
from autotune.search.tally import Tally
from autotune.secrets import mask_url, scrub

SECRET = "s3cr%t"

URLS = [
    ("postgresql://me:s3cr%25t@db.example/arc", "postgresql://me:***@db.example/arc"),
    ("postgresql://me@db.example/arc?password=s3cr%25t",
     "postgresql://me@db.example/arc?password=***"),
    ("postgresql://me@db.example/arc?application_name=x&password=s3cr%25t",
     "postgresql://me@db.example/arc?application_name=x&password=***"),
    ("mysql+pymysql://me@db/arc?passwd=s3cr%25t&charset=utf8mb4",
     "mysql+pymysql://me@db/arc?charset=utf8mb4&passwd=***"),
    ("postgresql://me@db/arc?sslpassword=s3cr%25t", "postgresql://me@db/arc?sslpassword=***"),
    ("mssql+pyodbc://me@dsn?odbc_connect=x&access_token=s3cr%25t",
     "mssql+pyodbc://me@dsn?access_token=***&odbc_connect=x"),
    ("sqlite:///studies/a.db?password=s3cr%25t", "sqlite:///studies/a.db?password=***"),
    ("not a url://me:s3cr%25t@host/db?token=s3cr%25t", None),
]


@pytest.mark.parametrize(("url", "shown"), URLS)
def test_every_url_form_is_masked(url: str, shown: str | None) -> None:
    masked = mask_url(url)
    if shown is not None:
        assert masked == shown
    assert "s3cr" not in masked
    assert "s3cr" not in scrub(f"could not connect to {url}: password s3cr%t refused", url)


def test_a_journal_path_is_shown_as_it_is() -> None:
    assert mask_url("journal:/shared/studies/arc.log") == "journal:/shared/studies/arc.log"


def test_the_export_header_never_holds_a_password(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="s")
    study.add_trial(optuna.create_trial(value=1.0, user_attrs={
        "stable": True, "effective_config": {"learning_rate": 1e-3}}))
    text = export_yaml(study, f"postgresql://me@h/db?password={SECRET}")
    assert "password=***" in text and SECRET not in text


def test_the_startup_line_never_holds_a_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("epochs: 1\nmax_tasks: 20\n")

    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(search_commands, "run_search", stop)
    url = f"sqlite:///a.db?password={SECRET}"
    assert cli.main(["search", "--storage", url, "--space", "s.yaml", "--trials", "1"]) == 130
    out = capsys.readouterr()
    assert "password=***" in out.out and SECRET not in out.out + out.err


MARKUP_NAMES = ["run[/]", "[red]x", "a[bold]b[/bold]", "back\\", "[link=x]y"]


@pytest.mark.parametrize("name", MARKUP_NAMES)
def test_names_are_printed_as_text_never_as_markup(name: str) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=400, color_system=None)
    result = RunResult(status=RunStatus.GAVE_UP, hparams={}, config={},
                       best_val_loss=1.0, best_epoch=1, final={}, events=[],
                       global_epochs=1)
    run_summary(console, result, Path(name))
    tally = Tally(done=1, total=1, running=0, best_value=None, best_trial=None, diverged=0,
                  recovered=0, gave_up=0, pruned=1, failed=0)
    search_commands.render_outcome(console, SearchOutcome(name, tally, None))
    text = buffer.getvalue()
    assert f"run {name}: gave up" in text
    assert f"autotune resume {name}\n" in text
    assert f"study {name}: 1/1 trials" in text


@pytest.mark.parametrize(("jobs", "trials", "started"), [(6, 1, None), (6, 3, 3), (2, 5, 2)])
def test_no_more_workers_than_trials(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                     jobs: int, trials: int, started: int | None) -> None:
    plan = prepare(SearchSettings(study="j", trials=trials, jobs=jobs, space="space.yaml"))
    seen: list[int] = []
    monkeypatch.setattr(outcome, "run_workers", lambda p, *a: seen.append(p.jobs) or [])
    monkeypatch.setattr(outcome, "work", lambda *a, **k: None)  # no trial runs here
    outcome.run_search(plan, confirm_winner=False)
    assert seen == ([] if started is None else [started])  # None: only this process


def test_a_seed_at_the_top_of_its_range_seeds_every_worker() -> None:
    plan = StudyPlan(study="s", storage="", trials=30, space={}, profile="tiny", epochs=None,
                     artifacts="a", seed=SEED_MAX)
    make_sampler(plan, worker=7, existing=10_000)  # numpy takes seeds < 2**32 only
