"""Every expected failure in pedseg is a :class:`PedsegError`.

The CLI prints ``str(error)`` as one line on stderr and exits with status 1. A message says what went
wrong, where (file, field, domain) and, when it is not obvious, how to fix it. Exceptions that are not
``PedsegError`` are bugs and keep their traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches


class PedsegError(Exception):
    """Base class of all expected, user-facing errors."""

    exit_code: int = 1

    def __str__(self) -> str:
        # Guarantee a single line whatever the message holds.
        return " ".join(super().__str__().split())


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


class ModelError(PedsegError):
    """A trained model, checkpoint or export is missing, corrupt or incompatible."""


class TrainingError(PedsegError):
    """Training cannot start or must stop (non-finite loss, bad resume, ...)."""


class DeviceError(PedsegError):
    """A requested compute device or execution provider is not usable."""


class PlanError(PedsegError):
    """A training plan or dataset fingerprint file is invalid or cannot be made."""
