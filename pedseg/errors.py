"""Every expected failure in pedseg is a :class:`PedsegError`.

The CLI prints ``str(error)`` as one line on stderr and exits with status 1. A message says what went
wrong, where (file, field, domain) and, when it is not obvious, how to fix it. Exceptions that are not
``PedsegError`` are bugs and keep their traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from pathlib import Path

MAX_MESSAGE_CHARS = 500  # longer messages are cut (ending in an ellipsis) where they are shown


def one_line(text: str, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line (whitespace runs become one space), at most ``limit`` characters."""
    head = text[: 8 * limit]  # never split a huge text whole: only its start can be shown
    flat = " ".join(head.split())
    if len(flat) <= limit and len(head) == len(text):
        return flat
    return flat[: limit - 1].rstrip() + "…"


class PedsegError(Exception):
    """Base class of all expected, user-facing errors."""

    exit_code: int = 1

    def __str__(self) -> str:
        # One short line whatever the message holds (a file's content may end up in it).
        return one_line(super().__str__())


class ConfigError(PedsegError):
    """A configuration value (command-line option, config file) is invalid."""


class DescriptorError(PedsegError):
    """A domain descriptor is invalid. Holds every problem found in the file."""

    def __init__(self, source: str, problems: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.problems = list(problems)
        text = "; ".join(f"{source}: {field}: {message}" for field, message in self.problems)
        super().__init__(text)


class RegistryError(PedsegError):
    """A domain or normalization is unknown, duplicated or cannot be registered."""


class UnknownNameError(RegistryError):
    """A name is not in a registry; suggests the closest known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        close = get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(known) if known else "none"
        super().__init__(f"unknown {kind} {name!r}.{hint} Known: {listing}.")
        self.name = name
        self.known = known


class VolumeError(PedsegError):
    """An image or label file cannot be used (missing, corrupt, bad geometry, bad values)."""

    def __init__(self, path: object, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


class DatasetError(PedsegError):
    """A domain's dataset is missing, empty or inconsistent."""


class OutputExistsError(PedsegError):
    """Writing would replace a file or folder the user already has."""

    def __init__(self, path: object, hint: str = "pass --overwrite to replace it") -> None:
        super().__init__(f"{path}: already exists; {hint}")
        self.path = str(path)


_OUTPUT_HINTS = {
    errno.EACCES: "check the permissions or choose another folder",
    errno.EPERM: "check the permissions or choose another folder",
    errno.EROFS: "choose a writable folder",
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.ENAMETOOLONG: "choose a shorter name or path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file name",
}


def describe_os_error(error: OSError) -> str:
    """``"<strerror>; <how to fix>"`` for an :class:`OSError` (its errno picks the hint)."""
    what = error.strerror or type(error).__name__
    hint = _OUTPUT_HINTS.get(error.errno or 0, "check the location and try again")
    culprit = error.filename
    not_a_folder = error.errno in (errno.ENOTDIR, errno.EEXIST)
    if not_a_folder and isinstance(culprit, str) and Path(culprit).is_file():
        hint = f"{culprit} is a file, not a folder; choose another path"
    return f"{what}; {hint}"


class OutputError(PedsegError):
    """An output cannot be written (read-only folder, disk full, name too long, ...).

    ``reason`` is an :class:`OSError` (its errno picks the hint) or a text; ``path`` is the output
    the user asked for, never a temporary file.
    """

    def __init__(self, path: object, reason: OSError | str) -> None:
        if isinstance(reason, OSError):
            reason = describe_os_error(reason)
        super().__init__(f"{path}: cannot be written: {reason}")
        self.path = str(path)
        self.detail = reason


class ModelError(PedsegError):
    """A trained model, checkpoint or export is missing, corrupt or incompatible."""


class ProfileUnavailableError(ModelError):
    """A model carries no domain profiles (trained before them, or an ONNX export): domain
    recognition is unavailable by design, not because something is damaged."""


class IntegrityError(ModelError):
    """An artifact's bytes do not match the SHA-256 recorded when pedseg wrote it."""


class TrainingError(PedsegError):
    """Training cannot start or must stop (non-finite loss, bad resume, ...)."""


class DeviceError(PedsegError):
    """A requested compute device or execution provider is not usable."""


class PlanError(PedsegError):
    """A training plan or dataset fingerprint file is invalid or cannot be made."""
