"""Torch's threads matched to the free cores (autotune/recovery/threads.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from autotune.recovery.threads import (
    MIN_WINDOW_S,
    CoreShare,
    Sample,
    ceiling,
    cpus,
    others_busy,
    sample,
    threads_for,
)


@pytest.mark.parametrize(("others", "cores", "most", "want"), [
    (0.0, 2, 2, 2),      # nobody else: every core
    (0.3, 2, 2, 2),      # a little noise: still both
    (0.25, 2, 2, 2),     # a quarter of a core: still counts as free
    (0.35, 2, 2, 1),     # a third of a core taken: one free
    (1.0, 2, 2, 1),      # one busy neighbour on two cores
    (5.0, 2, 2, 1),      # never fewer than one
    (0.0, 16, 4, 4),     # never more than the run started with
    (10.2, 16, 8, 6),
    (-0.1, 2, 2, 2),     # clock jitter below zero counts as zero
])
def test_threads_for_gives_the_free_cores(others: float, cores: int, most: int,
                                          want: int) -> None:
    assert threads_for(others, cores, most) == want


def test_others_busy_is_the_cores_used_by_other_processes_over_the_window() -> None:
    before = Sample(busy_s=100.0, own_s=10.0, wall_s=50.0)
    # 2 s of wall: 3 busy CPU seconds on our cores, 1 of them ours -> others used 1 core.
    assert others_busy(before, Sample(103.0, 11.0, 52.0)) == pytest.approx(1.0)
    # Our own time is never counted against us (ticks are coarser than process_time).
    assert others_busy(before, Sample(100.5, 11.0, 52.0)) == 0.0
    assert others_busy(before, Sample(200.0, 10.0, 50.0 + MIN_WINDOW_S / 2)) is None


def write_stat(path: Path, ticks: list[int]) -> None:
    lines = [f"cpu  {sum(ticks)} 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{i} {t} 0 0 1000 0 0 0 0 0 0" for i, t in enumerate(ticks)]
    path.write_text("\n".join(lines + ["intr 0", "ctxt 0"]) + "\n")


def test_sample_reads_the_busy_time_of_the_given_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    write_stat(stat, [100, 300, 5000])
    got = sample(frozenset({0, 1}), stat)
    assert got is not None and got.busy_s * _tick() == pytest.approx(400)
    assert sample(frozenset({7}), stat) is None  # names none of ours
    assert sample(frozenset({0}), tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_sample_reads_this_machine() -> None:
    got = sample(cpus())
    assert got is not None and got.busy_s > 0 and got.own_s > 0


def _tick() -> int:
    import os

    return os.sysconf("SC_CLK_TCK")


def test_core_share_follows_the_neighbours(tmp_path: Path) -> None:
    ours = sorted(cpus())
    if len(ours) < 2:
        pytest.skip("needs two CPUs")
    stat = tmp_path / "stat"
    ticks = [0] * (max(ours) + 1)
    write_stat(stat, ticks)
    torch.set_num_threads(2)
    share = CoreShare(most=2, stat=stat)
    assert share.update() is None  # no window yet: nothing decided
    time.sleep(MIN_WINDOW_S)
    # Another process kept every one of our CPUs busy (far more ticks than the window).
    write_stat(stat, [t + 10_000 * (i in ours) for i, t in enumerate(ticks)])
    assert share.update() == 1 and torch.get_num_threads() == 1
    time.sleep(MIN_WINDOW_S)
    assert share.update() == 2 and torch.get_num_threads() == 2  # the neighbour left
    time.sleep(MIN_WINDOW_S)
    write_stat(stat, [t + 20_000 * (i in ours) for i, t in enumerate(ticks)])
    assert share.update() == 1
    # A later run of the process starts from the last decision.
    assert CoreShare(most=2, stat=stat).update() is None and torch.get_num_threads() == 1


def test_the_ceiling_is_omp_num_threads_where_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert ceiling() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(2)
    assert ceiling() == 2


def test_a_single_thread_is_left_alone(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    stat = tmp_path / "stat"
    write_stat(stat, [0, 0])
    share = CoreShare(stat=stat)
    time.sleep(MIN_WINDOW_S)
    write_stat(stat, [10_000, 10_000])
    assert share.update() is None and torch.get_num_threads() == 1
