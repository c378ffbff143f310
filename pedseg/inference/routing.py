"""Which domain each scan is predicted as, and what the scan's report says about it.

With a domain given (``--domain``), every scan is predicted as that domain; when the run holds domain
profiles each scan is also checked against them, and a scan that looks like another domain or like
none gets a warning and a ``recognition`` entry in its JSON. Without one, each scan's domain is
recognised from the scan itself (:mod:`pedseg.inference.recognition`); a scan that cannot be
recognised is predicted as the run's first domain, with the reason as a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pedseg.errors import PedsegError
from pedseg.inference.cases import Case
from pedseg.io.volume import Volume

__all__ = ["DomainCheck", "Route", "Router", "fixed_domain", "recognised_domain"]


@dataclass(frozen=True)
class Route:
    """A scan's domain, its report's ``recognition`` entry and the warnings to show."""

    domain: str
    recognition: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    summary: str | None = None
    """How the domain was chosen, for display ("domain pelvis (94% of slices)")."""


class Router(Protocol):
    def __call__(self, case: Case, volume: Volume) -> Route: ...


class DomainCheck(Protocol):
    """What a router needs of a :class:`~pedseg.inference.recognition.Recognizer`."""

    @property
    def domains(self) -> Sequence[str]: ...

    def identify(self, volume: Volume) -> Any: ...


def fixed_domain(domain: str, check: DomainCheck | None = None) -> Router:
    """Every scan as ``domain``; with ``check``, each scan is also compared with the profiles."""

    def route(case: Case, volume: Volume) -> Route:
        if check is None:
            return Route(domain)
        recognition = check.identify(volume)
        entry: dict[str, Any] = recognition.to_dict(expected=domain)
        warning = None if recognition.ood else entry.get("warning")  # OOD: the verdict says it
        return Route(domain, entry, (str(warning),) if warning else ())

    return route


def recognised_domain(check: DomainCheck) -> Router:
    """Each scan as the domain it is recognised as."""

    def route(case: Case, volume: Volume) -> Route:
        try:
            recognition = check.identify(volume)
        except PedsegError as exc:
            fallback = check.domains[0]
            return Route(
                fallback,
                {"error": str(exc)},
                (f"domain recognition failed ({exc}); predicted as {fallback!r}",),
            )
        warning = None if recognition.ood else recognition.warning()  # OOD: the verdict says it
        return Route(
            recognition.domain,
            recognition.to_dict(),
            (warning,) if warning else (),
            summary=f"domain {recognition.domain} ({recognition.confidence:.0%} of slices)",
        )

    return route
