"""SHA-256 of every artifact pedseg writes and reads back, and the refusal of a mismatch."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pedseg.errors import IntegrityError

__all__ = ["file_sha256", "verify_sha256"]


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str, *, recorded_in: Path | str, fix: str) -> str:
    """Raise :class:`IntegrityError` unless ``path`` hashes to ``expected``; return the hash."""
    actual = file_sha256(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: SHA-256 {actual[:12]}… does not match {recorded_in} ({expected[:12]}…); "
            f"the file was modified or damaged: {fix}"
        )
    return actual
