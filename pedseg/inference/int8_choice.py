"""Choosing a domain's int8 ONNX export over its fp32 one (``predict --backend``).

``--backend onnx-int8`` uses ``RUN/onnx/<domain>.int8.onnx`` (or ``<domain>.int8.onnx`` of an ONNX
folder) and refuses, in one line, one that is missing, stale (another ``model_sha256`` than the run's
weights or the folder's fp32 export) or not verified. Without ``--backend`` the int8 export is
preferred only when all of these hold:

* it exists, is up to date and passed its accuracy verification (``verification.passed``);
* the network runs on the CPU (``--device cpu``, or ``auto`` on a machine without a usable GPU);
* its speed record (measured when it was exported) comes from a CPU of the same model string as this
  one and says int8 ran at least :data:`MIN_SPEEDUP` times as many slices per second as fp32.

Otherwise predict keeps the fp32 export (or PyTorch), and the reason is logged. Importing this
module imports neither torch nor onnxruntime; metadata is read with
:func:`pedseg.export.onnx.read_onnx_metadata` (which refuses external data).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedseg.errors import ModelError
from pedseg.export.cpu import cpu_model
from pedseg.runfolder.layout import RunLayout

__all__ = [
    "INT8_BACKEND",
    "MIN_SPEEDUP",
    "Int8Choice",
    "choose_int8",
    "int8_problem",
    "onnx_backend_name",
    "onnx_source_int8",
    "run_int8",
]

logger = logging.getLogger(__name__)

INT8_BACKEND = "onnx-int8"
MIN_SPEEDUP = 1.1
"""int8 must have been measured this many times faster than fp32 to be chosen automatically."""


@dataclass(frozen=True)
class Int8Choice:
    """The int8 export to use (``None``: keep fp32) and why."""

    path: Path | None
    reason: str


def int8_problem(meta: dict[str, str], *, model_sha256: str | None) -> str | None:
    """Why an export with metadata ``meta`` cannot serve as int8 (``None``: it can)."""
    if meta.get("precision") != "int8":
        return f"its precision is {meta.get('precision', 'unknown')!r}, not 'int8'"
    if model_sha256 is not None and meta.get("model_sha256") != model_sha256:
        return "it was exported from another model (weights changed since)"
    if not _json(meta, "verification").get("passed", False):
        return "it records no passed accuracy verification"
    return None


def choose_int8(path: Path, *, model_sha256: str | None, device: str) -> Int8Choice:
    """Whether predict should use the int8 export ``path`` when no backend is asked for."""
    if not path.is_file():
        return Int8Choice(None, f"no int8 export ({path.name})")
    from pedseg.export.onnx import read_onnx_metadata

    meta = read_onnx_metadata(path)
    problem = int8_problem(meta, model_sha256=model_sha256)
    if problem is not None:
        return Int8Choice(None, f"{path} not used: {problem}")
    if not _runs_on_cpu(device):
        return Int8Choice(None, "int8 exports are chosen automatically on the CPU only")
    speed = _json(meta, "speed")
    here = cpu_model()
    if speed.get("cpu") != here:
        return Int8Choice(None, f"int8 speed was measured on {speed.get('cpu')!r}, not {here!r}")
    try:
        ratio = float(speed["int8_slices_per_s"]) / float(speed["fp32_slices_per_s"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return Int8Choice(None, f"{path}: unreadable speed record")
    if not ratio >= MIN_SPEEDUP:
        return Int8Choice(None, f"int8 measured {ratio:.2f}x fp32 on this CPU (< {MIN_SPEEDUP}x)")
    return Int8Choice(path, f"int8 measured {ratio:.2f}x fp32 on this CPU")


def run_int8(
    layout: RunLayout, domain: str, *, backend: str | None, model_sha256: str, device: str
) -> Path | None:
    """The int8 export of a run's ``domain`` that predict uses, or ``None`` (see the module doc)."""
    path = layout.onnx_int8(domain)
    if backend == INT8_BACKEND:
        _require(
            path, model_sha256=model_sha256, missing=f"{layout.root}: no int8 export of {domain!r}"
        )
        return path
    return _preferred(path, backend, model_sha256=model_sha256, device=device)


def onnx_source_int8(source: Path, domain: str, *, backend: str | None, device: str) -> Path | None:
    """Like :func:`run_int8` for an ``.onnx`` file or a folder of exports (``--model``)."""
    if source.is_file():
        if backend == INT8_BACKEND and not RunLayout.is_int8_export(source):
            raise ModelError(f"{source}: not an int8 export; drop --backend onnx-int8")
        return None
    path = RunLayout(source).onnx_int8(domain, folder=source)
    fp32 = RunLayout(source).onnx(domain, folder=source)
    sha = None
    if fp32.is_file():
        from pedseg.export.onnx import read_onnx_metadata

        sha = read_onnx_metadata(fp32).get("model_sha256")
    if backend == INT8_BACKEND:
        _require(path, model_sha256=sha, missing=f"{source}: no int8 export of {domain!r}")
        return path
    if backend is None and path.is_file() and not fp32.is_file():
        _require(path, model_sha256=None, missing="")  # the folder's only export of the domain
        return path
    return _preferred(path, backend, model_sha256=sha, device=device)


def onnx_backend_name(path: Path) -> str:
    """The backend name predict prints for the export ``path``."""
    return INT8_BACKEND if RunLayout.is_int8_export(path) else "onnx"


# ---------------------------------------------------------------------- helpers
def _preferred(
    path: Path, backend: str | None, *, model_sha256: str | None, device: str
) -> Path | None:
    if backend is not None:
        return None
    choice = choose_int8(path, model_sha256=model_sha256, device=device)
    logger.info("%s: %s", "using int8" if choice.path else "keeping fp32", choice.reason)
    return choice.path


def _require(path: Path, *, model_sha256: str | None, missing: str) -> None:
    if not path.is_file():
        raise ModelError(
            f"{missing} ({path} missing); run pedseg export-onnx --int8 first, or drop "
            "--backend onnx-int8"
        )
    from pedseg.export.onnx import read_onnx_metadata

    problem = int8_problem(read_onnx_metadata(path), model_sha256=model_sha256)
    if problem is not None:
        raise ModelError(f"{path}: {problem}; re-export with pedseg export-onnx --int8 --overwrite")


def _json(meta: dict[str, str], key: str) -> dict[str, Any]:
    try:
        value = json.loads(meta.get(key, "{}"))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _runs_on_cpu(device: str) -> bool:
    from pedseg.inference.backends import gpu_present, parse_device

    kind = parse_device(device).kind
    if kind != "auto":
        return kind == "cpu"
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency
        return True
    return not ("CUDAExecutionProvider" in ort.get_available_providers() and gpu_present())
