"""Trials at once on one device: the --jobs default (autotune/search/study/packing.py), its
flow into the plan and the startup line, and several workers sharing one device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autotune import cli
from autotune.search.outcome import SearchOutcome
from autotune.search.study import packing
from autotune.search.study.packing import GIB, Packing, choose_jobs, pack, trial_memory
from autotune.search.study.plan import SearchSettings, prepare
from autotune.search.tally import Tally
from autotune.search.vocabulary import StudyAttr
from tests.search.common import stored_study
from trainer.config import resolve
from trainer.model import GridTransformer, ModelConfig, count_parameters


@pytest.mark.parametrize(("free", "need", "cores", "cap", "jobs", "reason"), [
    (40, 9, 16, 8, 4, "40.0 GiB free / 9.0 GiB a trial, cap 8"),
    (60.2, 9, 16, 8, 6, "60.2 GiB free / 9.0 GiB a trial, cap 8"),
    (139, 8, 16, 8, 8, "139.0 GiB free / 8.0 GiB a trial (17 fit), cap 8"),
    (139, 8, 4, 8, 4, "139.0 GiB free / 8.0 GiB a trial (17 fit), cap 8, 4 CPU cores"),
    (20, 8, 1, 8, 1, "20.0 GiB free / 8.0 GiB a trial (2 fit), cap 8, 1 CPU cores"),
    (8, 8, 16, 8, 1, "8.0 GiB free / 8.0 GiB a trial, cap 8"),
    (3, 8, 16, 8, 1, "3.0 GiB free / 8.0 GiB a trial: not even one fits; it may run out "
                     "of memory"),
    (0, 8, 16, 8, 1, "0.0 GiB free / 8.0 GiB a trial: not even one fits; it may run out "
                     "of memory"),
    (100, 1, 16, 3, 3, "100.0 GiB free / 1.0 GiB a trial (100 fit), cap 3"),
])
def test_pack(free: float, need: float, cores: int, cap: int, jobs: int,
              reason: str) -> None:
    assert pack(int(free * GIB), int(need * GIB), cores, cap) == Packing(jobs, reason)


def test_pack_rejects_a_need_of_nothing() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        pack(GIB, 0, 4)


def test_describe_says_how_many_and_why() -> None:
    assert Packing(4, "40.0 GiB free / 9.0 GiB a trial, cap 8").describe() == \
        "4 jobs (40.0 GiB free / 9.0 GiB a trial, cap 8)"
    assert Packing(1, "on the CPU").describe() == "1 job (on the CPU)"


@pytest.mark.parametrize("size", ["tiny", "default", "large"])
@pytest.mark.parametrize("n_tasks", [37, 800])
def test_parameters_match_the_model(size: str, n_tasks: int) -> None:
    config = ModelConfig.of_size(size, n_tasks)
    assert packing.parameters(config) == count_parameters(GridTransformer(config))


def test_trial_memory_grows_with_the_batch_the_grids_and_the_model() -> None:
    default = resolve("default")
    total = trial_memory(default).total
    assert 4 * GIB < total < 16 * GIB  # 7.7 GiB: 4.5 GiB of activations at 64 x 31x31
    assert trial_memory(default.replace(batch_size=128)).total > total
    assert trial_memory(default.replace(max_grid=20)).total < total
    sizes = [trial_memory(resolve(p)).total for p in ("tiny", "default", "large")]
    assert sizes == sorted(sizes)
    assert packing.canvas_side(10) == 11 and packing.canvas_side(30) == 31


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA device with 60.2 GiB free, as torch reports it (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (int(60.2 * GIB), 80 * GIB))
    monkeypatch.setattr("autotune.search.study.packing.cores", lambda: 16)


def _never() -> int:
    raise AssertionError("the need of a trial is not asked for")


def test_choose_jobs_on_the_cpu_is_one() -> None:
    assert choose_jobs(None, "cpu", _never, 16) == Packing(1, "on the CPU; --jobs N runs N "
                                                             "at once")


@pytest.mark.usefixtures("cuda")
def test_choose_jobs_given_wins_and_cuda_packs() -> None:
    assert choose_jobs(3, "auto", _never, 16) == Packing(3, "as given by --jobs")
    assert choose_jobs(None, "auto", lambda: 9 * GIB, 16) == \
        Packing(6, "60.2 GiB free / 9.0 GiB a trial, cap 8")
    assert choose_jobs(None, "cpu", _never, 16).jobs == 1  # an explicit CPU stays 1


@pytest.mark.usefixtures("cuda", "workdir")
def test_prepare_on_cuda_packs_the_default_profile() -> None:
    plan = prepare(SearchSettings(study="g"))
    need = trial_memory(resolve("default")).total  # the default space's corner: batch 64
    assert plan.profile == "default"
    assert plan.jobs == min(8, int(60.2 * GIB) // need) == 7
    assert plan.jobs_reason == f"60.2 GiB free / {need / GIB:.1f} GiB a trial, cap 8"
    stored = stored_study("g").user_attrs[StudyAttr.PLAN]
    assert stored["jobs"] == 7 and "jobs_reason" not in stored
    again = prepare(SearchSettings(study="g", jobs=2))  # joining: --jobs wins
    assert (again.jobs, again.jobs_reason) == (2, "as given by --jobs")


@pytest.mark.usefixtures("workdir")
def test_prepare_on_the_cpu_is_one_job() -> None:
    plan = prepare(SearchSettings(study="c", device="cpu"))
    assert (plan.jobs, plan.profile) == (1, "tiny")


@pytest.mark.usefixtures("cuda", "workdir")
def test_the_startup_line_says_how_many_jobs_and_why(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    seen = []

    def no_search(plan, on_event=None, timeout=None) -> SearchOutcome:  # noqa: ANN001
        seen.append(plan.jobs)
        return SearchOutcome(plan.study, Tally(0, plan.trials, 0, None, None, 0, 0, 0, 0, 0),
                             None)

    monkeypatch.setattr("autotune.cli.search_commands.run_search", no_search)
    assert cli.main(["search", "--trials", "2", "--space", "space.yaml"]) == 3
    out = capsys.readouterr().out
    assert "profile default, 7 jobs (60.2 GiB free / 7.7 GiB a trial, cap 8), " \
           "recovery on" in " ".join(out.split())
    assert cli.main(["search", "--study", "other", "--trials", "2", "--jobs", "3"]) == 3
    assert "3 jobs (as given by --jobs)" in " ".join(capsys.readouterr().out.split())
    assert seen == [7, 3]


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_jobs_exit_2_with_one_line(workdir: Path, capsys: pytest.CaptureFixture[str],
                                       value: str) -> None:
    assert cli.main(["search", "--jobs", value]) == 2
    err = capsys.readouterr().err
    assert "--jobs" in err and err.strip().count("\n") == 0
    assert not Path("studies").exists()
