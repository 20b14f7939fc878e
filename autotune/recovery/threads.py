"""Torch's CPU threads matched, epoch by epoch, to the cores other processes leave free.

torch's OpenMP threads spin for a while when they wait for each other (libgomp's default).
On cores that nothing else uses that is the fastest way to run, but where another process
holds one of the cores every parallel region waits for a thread that is not running
(BENCHMARKS.md, "Threads"). Sleeping instead (`OMP_WAIT_POLICY=PASSIVE`, what autotune set
before) made the main job 1.8 times as long on an idle machine. So after each epoch the
supervisor measures how much of this process's cores other processes used over that epoch
(`/proc/stat`'s busy time on those cores, less this process's own CPU time) and gives
torch the whole cores left free: never more threads than the run may use (`ceiling`),
never fewer than one. A single thread never waits for another, so a busy neighbour costs
it only its share of a core. Where `/proc/stat` cannot be read (not Linux), nothing
changes.

The decision is a pure function (`threads_for`); `CoreShare` reads the clocks and applies
it. A change of thread count can change the last bits of a float reduction, so a run that
must repeat bit for bit pins one thread (the tests do; so does `search_vs_optuna.py`).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MIN_WINDOW_S", "SLACK", "CoreShare", "Sample", "ceiling", "cpus", "others_busy",
           "sample", "threads_for", "told_threads"]

MIN_WINDOW_S = 0.25
"""No decision on less wall time than this (`/proc/stat` counts in 10 ms ticks)."""

SLACK = 0.3
"""A core that other processes use less than this much of still counts as free: a spinning
thread loses little to a neighbour that rarely runs, and much to one that often does."""

STAT = Path("/proc/stat")
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
"""`/proc/stat`'s unit: ticks a second."""
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""user, nice, system, irq, softirq, steal (guest time is inside user already)."""


@dataclass(frozen=True)
class Sample:
    """CPU seconds at one moment: all processes on the given cores, and this process."""

    busy_s: float
    own_s: float
    wall_s: float


def threads_for(others: float, cores: int, most: int) -> int:
    """Threads for torch when other processes keep `others` of our `cores` cores busy
    (a mean over the last window, in cores): the whole cores left free (a core less than
    `SLACK` busy counts as free), between 1 and `most`."""
    free = cores - max(0.0, others)
    return max(1, min(most, math.floor(free + SLACK)))


def others_busy(before: Sample, after: Sample) -> float | None:
    """Cores other processes kept busy between two samples, or None for too short a
    window."""
    wall = after.wall_s - before.wall_s
    if wall < MIN_WINDOW_S:
        return None
    return max(0.0, ((after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / wall)


def told_threads() -> int | None:
    """`OMP_NUM_THREADS` as a whole number above 0, or None where it is not set so."""
    told = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(told) if told.isdigit() and int(told) > 0 else None


def ceiling() -> int:
    """The most threads a run may use: `OMP_NUM_THREADS` where it is set (the user's, or a
    search worker's share of the cores, `autotune.search.study.workers`), else the number
    torch was given. A later run of the process starts from the last decision, not from
    this, so its first epoch does not meet a neighbour with too many threads."""
    return told_threads() or torch.get_num_threads()


def cpus() -> frozenset[int]:
    """The CPUs this process may run on."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:
        return frozenset(range(os.cpu_count() or 1))


def sample(on: frozenset[int], stat: Path = STAT) -> Sample | None:
    """Busy CPU seconds on the CPUs `on` (from `stat`), this process's CPU seconds and the
    wall clock; None where `stat` cannot be read or names none of those CPUs."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    busy, seen = 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in on):
            continue
        fields = rest.split()
        try:
            busy += sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
        except ValueError:
            return None
        seen += 1
    if seen == 0:
        return None
    return Sample(busy / TICK, time.process_time(), time.monotonic())


class CoreShare:
    """Keeps torch's thread count at the cores left free (see the module docstring)."""

    def __init__(self, most: int | None = None, stat: Path = STAT) -> None:
        self.most = int(most or ceiling())
        self.cpus = cpus()
        self.stat = stat
        self._last = sample(self.cpus, stat) if self.most > 1 else None

    def update(self) -> int | None:
        """Measure the window since the last decision and set torch's threads; returns the
        new count when it changed, else None."""
        if self._last is None:
            return None
        now = sample(self.cpus, self.stat)
        if now is None:
            return None
        others = others_busy(self._last, now)
        if others is None:
            return None  # too short to judge: the window grows until the next call
        self._last = now
        want = threads_for(others, len(self.cpus), self.most)
        if want == torch.get_num_threads():
            return None
        torch.set_num_threads(want)
        return want
