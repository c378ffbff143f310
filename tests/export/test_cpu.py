"""The machine line every benchmark record carries (pedseg.export.cpu)."""

from __future__ import annotations

import pytest

from pedseg.export import cpu


def test_description_names_model_cores_and_logical_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"model name": "Test CPU 9000", "cpu cores": "4"})
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 8)
    assert cpu.cpu_description() == "Test CPU 9000, 4 cores, 8 logical CPUs"


def test_description_without_core_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: {"model name": "Test CPU"})
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    assert cpu.cpu_description() == "Test CPU, 2 logical CPUs"
