"""CpuWatch: the other processes' share of this process's CPUs (injected readings, and one real
burner process pinned to a CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pedseg.training.contention import (
    CONTENDED_SHARE,
    CpuWatch,
    cpu_busy_seconds,
    is_contended,
)


def _readings(*values: float | None) -> object:
    it: Iterator[float | None] = iter(values)
    return lambda *args: next(it)


def test_share_is_the_others_busy_time_over_the_capacity() -> None:
    # 2 CPUs for 10 s = 20 CPU-seconds; 15 s busy, 10 s of them this process: 5 / 20 = 0.25.
    watch = CpuWatch(
        cpus={0, 1},
        busy=_readings(100.0, 115.0),  # type: ignore[arg-type]
        own=_readings(3.0, 13.0),  # type: ignore[arg-type]
        clock=_readings(50.0, 60.0),  # type: ignore[arg-type]
    )
    with watch:
        pass
    assert watch.others == pytest.approx(0.25)
    assert not is_contended(watch.others) and is_contended(CONTENDED_SHARE + 0.01)
    assert not is_contended(None)


@pytest.mark.parametrize(
    ("busy", "own", "clock", "expected"),
    [
        ((1.0, None), (0.0, 0.0), (0.0, 10.0), None),  # /proc/stat unreadable
        ((1.0, 1.1), (0.0, 0.0), (0.0, 0.2), None),  # 0.4 CPU-seconds: too short for 10 ms ticks
        ((0.0, 5.0), (0.0, 9.0), (0.0, 10.0), 0.0),  # own time read a tick ahead: clipped at 0
        ((0.0, 40.0), (0.0, 0.0), (0.0, 10.0), 1.0),  # clipped at 1
    ],
)
def test_unknown_or_clipped_shares(
    busy: tuple[float | None, ...],
    own: tuple[float, ...],
    clock: tuple[float, ...],
    expected: float | None,
) -> None:
    watch = CpuWatch(
        cpus={0, 1}, busy=_readings(*busy), own=_readings(*own), clock=_readings(*clock)
    )  # type: ignore[arg-type]
    with watch:
        pass
    assert watch.others == expected


def test_busy_seconds_of_the_chosen_cpus(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  999 0 0 0 0 0 0 0 0 0\n"
        "cpu0 100 10 20 5000 7 1 2 3 0 0\n"  # busy 100+10+20+1+2+3 = 136 ticks
        "cpu1 200 0 0 5000 0 0 0 0 0 0\n"
        "intr 1 2 3\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu_busy_seconds({0}, path=stat) == pytest.approx(136 / ticks)
    assert cpu_busy_seconds({0, 1}, path=stat) == pytest.approx(336 / ticks)
    assert cpu_busy_seconds({0, 5}, path=stat) is None  # a CPU without a line
    assert cpu_busy_seconds({0}, path=tmp_path / "missing") is None


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs Linux /proc/stat")
def test_a_real_burner_on_the_watched_cpu_is_seen() -> None:
    cpu = min(os.sched_getaffinity(0))
    code = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    burner = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)  # let it start spinning
        with CpuWatch(cpus={cpu}) as watch:
            time.sleep(1.0)  # this process sleeps: the CPU's busy time is the burner's
    finally:
        burner.kill()
        burner.wait()
    assert watch.others is not None and watch.others > 0.7
