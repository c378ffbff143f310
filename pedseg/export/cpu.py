"""This CPU's model string and matrix-instruction flags (the key and context of speed records).

Read from ``/proc/cpuinfo`` (Linux; ``platform`` elsewhere); import-light.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

__all__ = ["cpu_description", "cpu_flags", "cpu_model"]

_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


def cpu_model() -> str:
    """This CPU's model string (``lscpu``'s "Model name")."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_description() -> str:
    """``"<model>, <N> cores, <M> logical CPUs"``: the machine line of every benchmark record."""
    info = _cpuinfo()
    logical = os.cpu_count() or 0
    cores = info.get("cpu cores", "")
    core_text = f"{cores} cores, " if cores.isdigit() else ""
    return f"{cpu_model()}, {core_text}{logical} logical CPUs"


def cpu_flags() -> dict[str, bool]:
    """Whether this CPU has the int8 / bf16 matrix instructions onnxruntime can use."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {name: name in flags for name in _FLAGS}
