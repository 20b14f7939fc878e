"""Many workers on one real PostgreSQL study: `autotune search --storage postgresql://...`
from several processes, a worker killed mid-trial and its trial continued from its
checkpoint, and storage URLs that cannot work.

The server is the one `.ci/run` starts (127.0.0.1:5432, database `test`, trust auth); its
URL comes from AUTOTUNE_TEST_POSTGRES_URL. Unset: these tests skip. Set but unreachable:
they fail. Each test has its own study name and deletes its study afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from autotune.cli.app import main
from autotune.errors import ConfigError
from autotune.recovery import checkpoint_files as checkpoint
from autotune.search import mask_url, open_storage

pytestmark = pytest.mark.postgres

ENV = "AUTOTUNE_TEST_POSTGRES_URL"
SPACE = {"learning_rate": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
         "epochs": 3, "max_tasks": 20}  # 2 optimizer steps an epoch, well under a second
KILL = "kill@3"  # the second step of epoch 2: after the epoch-1 checkpoint
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture(scope="module")
def pg_storage() -> RDBStorage:
    """The server's storage, opened as autotune opens it (its tables made once, before
    workers and this test's reads could race to make them)."""
    url = os.environ.get(ENV, "").strip()
    if not url:
        pytest.skip(f"{ENV} is not set: no PostgreSQL server to test against (.ci/run sets "
                    f"it, e.g. postgresql://postgres@127.0.0.1:5432/test)")
    try:
        return open_storage(url)
    except ConfigError as exc:  # set but unreachable is a failure, never a skip
        pytest.fail(f"{ENV} is set but that server cannot be used: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def pg_url(pg_storage: RDBStorage) -> str:
    return os.environ[ENV].strip()


@pytest.fixture
def study_name(pg_storage: RDBStorage, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=pg_storage)
    except KeyError:
        pass  # the test never created it


def _worker(url: str, study: str, trials: int, artifacts: Path, core: int,
            inject: str | None = None) -> subprocess.Popen[str]:
    """One `autotune search` process on one core with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("AUTOTUNE_INJECT", None)
    if inject:
        env["AUTOTUNE_INJECT"] = inject
    cores = sorted(os.sched_getaffinity(0))
    pinned = {cores[core % len(cores)]}
    return subprocess.Popen(
        [sys.executable, "-m", "autotune", "search", "--storage", url, "--study", study,
         "--trials", str(trials), "--space", "space.yaml", "--artifacts", str(artifacts)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, pinned))


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    """Leave no worker behind when a check failed."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _trials(storage: RDBStorage, study: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def _owned_by(storage: RDBStorage, study: str, pid: int, timeout: float = 600.0
              ) -> FrozenTrial:
    """The first running trial of process `pid` (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for t in _trials(storage, study):
                if t.state == TrialState.RUNNING and (t.user_attrs.get("worker") or {}).get(
                        "pid") == pid:
                    return t
        except KeyError:
            pass  # the study is not created yet
        time.sleep(0.1)
    raise AssertionError(f"process {pid} ran no trial within {timeout} s")


def _global_epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["global_epoch"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _check_study(trials: list[FrozenTrial], total: int, artifacts: Path) -> list[FrozenTrial]:
    """Exactly `total` finished trials, none left running or queued, each with its own run
    directory under `artifacts`, every checkpoint there loadable; returns the killed ones."""
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == total
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    run_dirs = [Path(t.user_attrs["run_dir"]) for t in finished]
    assert len(set(run_dirs)) == total  # no run counted twice
    for t, run_dir in zip(finished, run_dirs):
        assert run_dir.parent == artifacts.resolve()
        assert _global_epochs(run_dir)
        if t.state == TrialState.COMPLETE:
            assert (run_dir / "summary.json").is_file()
            assert _global_epochs(run_dir)[-1] >= SPACE["epochs"]
    for folder in artifacts.iterdir():
        ckpts = folder / "checkpoints"
        infos = checkpoint.listing(ckpts)
        assert infos, folder
        for info in infos:
            assert checkpoint.load(ckpts, info)["version"] == checkpoint.FORMAT_VERSION
    return [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]


def _check_continued(trials: list[FrozenTrial], killed: FrozenTrial) -> FrozenTrial:
    """The finished retry of `killed` carried on its run from the epoch-1 checkpoint."""
    [retry] = [t for t in trials if t.user_attrs.get("retry_of") == killed.number
               and t.state in FINISHED]
    assert retry.params == killed.params
    run_dir = Path(killed.user_attrs["run_dir"])
    assert retry.user_attrs["run_dir"] == str(run_dir)
    assert _global_epochs(run_dir) == [1, 2, 3]  # not started over
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["kind"] == "resumed"]
    assert [e["global_epoch"] for e in resumed] == [1]
    return retry


def test_workers_run_one_study_and_continue_a_killed_workers_trial(
        pg_url: str, pg_storage: RDBStorage, study_name: str, workdir: Path) -> None:
    total, artifacts = 5, workdir / "shared"  # the pruner starts after 5: none is pruned
    doomed = _worker(pg_url, study_name, total, artifacts, core=0, inject=KILL)
    others: list[subprocess.Popen[str]] = []
    try:
        number = _owned_by(pg_storage, study_name, doomed.pid).number
        others = [_worker(pg_url, study_name, total, artifacts, core=i) for i in (1, 2)]
        assert doomed.wait(timeout=600) == 137
        for proc in others:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
    finally:
        _stop([doomed, *others])

    trials = _trials(pg_storage, study_name)
    [killed] = _check_study(trials, total, artifacts)
    assert killed.number == number and killed.user_attrs["worker"]["pid"] == doomed.pid
    retry = _check_continued(trials, killed)
    assert retry.user_attrs["worker"]["pid"] in {p.pid for p in others}


def test_resume_study_continues_a_killed_workers_trial(
        pg_url: str, pg_storage: RDBStorage, study_name: str, workdir: Path) -> None:
    total, artifacts = 2, workdir / "shared"
    doomed = _worker(pg_url, study_name, total, artifacts, core=0, inject=KILL)
    try:
        assert doomed.wait(timeout=600) == 137
    finally:
        _stop([doomed])
    [killed] = [t for t in _trials(pg_storage, study_name) if t.state == TrialState.RUNNING]
    assert _global_epochs(Path(killed.user_attrs["run_dir"])) == [1]

    assert main(["resume", "--study", study_name, "--storage", pg_url]) == 0
    trials = _trials(pg_storage, study_name)
    assert [t.number for t in _check_study(trials, total, artifacts)] == [killed.number]
    _check_continued(trials, killed)
    assert main(["resume", "--study", study_name, "--storage", pg_url]) == 0  # nothing left
    assert len([t for t in _trials(pg_storage, study_name) if t.state in FINISHED]) == total


@pytest.mark.parametrize(("url", "phrase"), [
    ("postgresql://postgres:s3cret@127.0.0.1:1/test", "cannot be opened"),
    ("postgresql://nobody:s3cret@127.0.0.1:5432/test", 'role "nobody" does not exist'),
    ("postgresql+pg8000://postgres:s3cret@127.0.0.1:5432/test",
     "needs a database driver that is not installed"),
])
def test_unusable_storage_is_exit_2_naming_the_masked_url(
        pg_url: str, workdir: Path, capsys: pytest.CaptureFixture[str], url: str,
        phrase: str) -> None:
    before = sorted(workdir.rglob("*"))
    assert main(["search", "--storage", url, "--study", "x", "--space", "space.yaml"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert mask_url(url) in err and "s3cret" not in err and phrase in err
    assert "Traceback" not in err
    assert sorted(workdir.rglob("*")) == before


def test_unknown_study_on_postgres_is_exit_2(pg_url: str, workdir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    for argv in (["report", "--study", missing], ["resume", "--study", missing],
                 ["export", "--study", missing, "--format", "csv"]):
        assert main([*argv, "--storage", pg_url]) == 2
        err = capsys.readouterr().err
        assert f"no study {missing!r}" in err and len(err.strip().splitlines()) == 1


def test_the_postgres_extras_driver_is_enough(pg_url: str, workdir: Path) -> None:
    # The `postgres` extra installs psycopg2; SQLAlchemy 2.1 reads postgresql:// as psycopg
    # (3). Without psycopg a plain URL must still reach the server through psycopg2.
    pytest.importorskip("psycopg2")
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    code = ("import sys; sys.modules['psycopg'] = None; from autotune.cli.app import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "report", "--study", missing,
                           "--storage", pg_url], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and f"no study {missing!r}" in proc.stderr, proc.stderr
