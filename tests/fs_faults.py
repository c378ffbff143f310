"""Simulated file-system faults for tests (the suite runs as root, which ignores ``chmod``).

:func:`fail_writes` makes every way of writing below a folder fail with one ``errno``: creating a
folder or a file (``os.mkdir``, ``os.open``, ``open``/``io.open`` in a write mode) and moving or
removing one (``os.replace``, ``os.rename``). Reading still works, like a read-only mount.
"""

from __future__ import annotations

import builtins
import errno as errno_codes
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["fail_writes", "files_below", "snapshot"]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _below(path: Any, root: Path) -> bool:
    if isinstance(path, int):
        return False
    try:
        return Path(os.fsdecode(path)).absolute().is_relative_to(root)
    except (TypeError, ValueError):
        return False


def fail_writes(
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    *,
    code: int = errno_codes.EROFS,
    ops: tuple[str, ...] = ("mkdir", "open", "replace", "rename", "unlink"),
) -> None:
    """Make writes below ``folder`` raise ``OSError(code)`` (only the operations in ``ops``)."""
    root = folder.absolute()

    def fault(path: Any) -> OSError:
        return OSError(code, os.strerror(code), os.fsdecode(path))

    def guard1(original: Callable[..., Any]) -> Callable[..., Any]:
        def patched(path: Any, *args: Any, **kwargs: Any) -> Any:
            if _below(path, root):
                raise fault(path)
            return original(path, *args, **kwargs)

        return patched

    def guard2(original: Callable[..., Any]) -> Callable[..., Any]:
        def patched(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            if _below(dst, root) or _below(src, root):
                raise fault(dst)
            return original(src, dst, *args, **kwargs)

        return patched

    if "mkdir" in ops:
        monkeypatch.setattr(os, "mkdir", guard1(os.mkdir))
    if "unlink" in ops:
        monkeypatch.setattr(os, "unlink", guard1(os.unlink))
        monkeypatch.setattr(os, "rmdir", guard1(os.rmdir))
    for name in ("replace", "rename"):
        if name in ops:
            monkeypatch.setattr(os, name, guard2(getattr(os, name)))
    if "open" in ops:
        os_open = os.open

        def patched_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> Any:
            if flags & _WRITE_FLAGS and _below(path, root):
                raise fault(path)
            return os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", patched_os_open)
        py_open = builtins.open

        def patched_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if any(c in mode for c in "wax+") and _below(file, root):
                raise fault(file)
            return py_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", patched_open)
        monkeypatch.setattr(io, "open", patched_open)


def files_below(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (relative, sorted); [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for folders), to compare byte for byte."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }
