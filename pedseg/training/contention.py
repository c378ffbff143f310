"""How much of this process's CPUs other processes took while something was being timed (Linux).

A step time measured while another job runs on the same cores is slower than the machine is (two
trainings on two cores each run about half as fast), and a cached one would mislead every later
plan. :class:`CpuWatch` reads the busy time of the CPUs this process may run on (``/proc/stat``:
user, nice, system, irq, softirq and steal, the last being what a hypervisor gave to other guests)
before and after, subtracts this process's own CPU time, and reports the rest as a share of the
CPUs' capacity over the wall time: ``0.0`` on a quiet machine, about ``0.5`` beside a second
training on the same cores. Where ``/proc/stat`` cannot be read (not Linux), or the window is too
short for its 10 ms ticks, :attr:`CpuWatch.others` is ``None`` (unknown).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

__all__ = ["CONTENDED_SHARE", "CpuWatch", "cpu_busy_seconds", "is_contended"]

CONTENDED_SHARE = 0.25
"""Above this share of the CPUs taken by other processes a measured time is not trusted."""
MIN_WINDOW_CPU_S = 0.5
"""Shortest window (wall seconds x CPUs) whose share is reported; ticks are 10 ms."""
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system [idle iowait] irq softirq steal
PROC_STAT = Path("/proc/stat")


def _affinity() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return frozenset(range(os.cpu_count() or 1))


def cpu_busy_seconds(cpus: Collection[int], *, path: Path = PROC_STAT) -> float | None:
    """Seconds the ``cpus`` have been busy since boot (``None`` where ``path`` is unreadable)."""
    try:
        text = path.read_text(encoding="ascii")
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    wanted = {f"cpu{n}" for n in cpus}
    busy, seen = 0, 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name not in wanted:
            continue
        values = rest.split()
        try:
            busy += sum(int(values[i]) for i in _BUSY_FIELDS if i < len(values))
        except ValueError:
            return None
        seen += 1
    if seen != len(wanted) or ticks <= 0:
        return None
    return busy / ticks


def is_contended(others: float | None) -> bool:
    """Whether a measurement with ``others`` (:attr:`CpuWatch.others`) is not to be trusted."""
    return others is not None and others > CONTENDED_SHARE


class CpuWatch:
    """``with CpuWatch() as watch: …`` then ``watch.others`` (see the module docstring).

    ``busy`` (seconds the watched CPUs were busy), ``own`` (this process's CPU seconds) and
    ``clock`` are arguments so that tests inject them.
    """

    def __init__(
        self,
        *,
        cpus: Collection[int] | None = None,
        busy: Callable[[Collection[int]], float | None] = cpu_busy_seconds,
        own: Callable[[], float] = time.process_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpus = frozenset(cpus) if cpus is not None else _affinity()
        self._busy, self._own, self._clock = busy, own, clock
        self._start: tuple[float | None, float, float] | None = None
        self.others: float | None = None

    def __enter__(self) -> CpuWatch:
        self._start = (self._busy(self.cpus), self._own(), self._clock())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        busy0, own0, wall0 = self._start
        busy1, own1, wall1 = self._busy(self.cpus), self._own(), self._clock()
        capacity = (wall1 - wall0) * len(self.cpus)
        if busy0 is None or busy1 is None or capacity < MIN_WINDOW_CPU_S:
            self.others = None
            return
        taken = (busy1 - busy0) - (own1 - own0)
        self.others = min(1.0, max(0.0, taken / capacity))
