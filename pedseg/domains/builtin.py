"""The built-in domain descriptors, registered through the ``pedseg.domains`` entry points.

Each entry point resolves to a function returning the descriptor's path, exactly as a plugin's would.
The YAML files live in the top-level ``domains/`` folder of the source tree and are shipped inside the
wheel as ``pedseg/_builtin_domains``.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def builtin_domains_dir() -> Path:
    """Folder of the built-in descriptors: inside the wheel, or the source checkout's ``domains/``."""
    installed = _PACKAGE_DIR / "_builtin_domains"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "domains"


def _descriptor(name: str) -> Path:
    return builtin_domains_dir() / f"{name}.yaml"


def ankle() -> Path:
    return _descriptor("ankle")


def shoulder() -> Path:
    return _descriptor("shoulder")


def pelvis() -> Path:
    return _descriptor("pelvis")


def spine() -> Path:
    return _descriptor("spine")
