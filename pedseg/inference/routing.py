"""Which domain each scan is predicted as, and what the scan's report says about it.

With a domain given (``--domain``), every scan is predicted as that domain; when the run holds domain
profiles each scan is also checked against them, and a scan that looks like another domain or like
none gets a warning and a ``recognition`` entry in its JSON. Without one, each scan's domain is
recognised from the scan itself (:mod:`pedseg.inference.recognition`); a scan that cannot be
recognised is predicted as the run's first domain, with the reason as a warning.

A :class:`FixedDomain` router knows the domain before it sees the scan, so a batch predicts the scan
first and hands the check the embeddings of that segmentation pass (``known``): the scan's own
domain is then checked without a second network call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pedseg.domains.spec import DomainSpec
from pedseg.errors import PedsegError
from pedseg.inference.cases import Case
from pedseg.io.volume import Volume

__all__ = [
    "DomainCheck",
    "FixedDomain",
    "KnownEmbeddings",
    "Route",
    "Router",
    "fixed_domain",
    "recognised_domain",
]


@dataclass(frozen=True, eq=False)
class KnownEmbeddings:
    """Every slice's embedding ``z`` ``(S, D)`` of a scan prepared for ``spec`` at ``image_size``
    (e.g. :attr:`pedseg.inference.predictor.Prediction.embeddings`)."""

    spec: DomainSpec
    image_size: tuple[int, int]
    z: np.ndarray

    def fits(self, candidate: Any, n_slices: int) -> bool:
        """Whether these are what embedding the scan as ``candidate`` (a recognition candidate:
        ``spec``, ``image_size``) would give."""
        return (
            tuple(self.image_size) == tuple(candidate.image_size)
            and self.z.ndim == 2
            and self.z.shape[0] == n_slices
            and (
                self.spec is candidate.spec
                or self.spec.content_hash() == candidate.spec.content_hash()
            )
        )


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


@dataclass(frozen=True)
class FixedDomain:
    """Every scan as ``domain``; with ``check``, each scan is also compared with the profiles.
    ``known`` (per domain, :class:`~pedseg.inference.recognition.KnownEmbeddings`) is passed on to
    ``check.identify`` so that it need not embed the scan again."""

    domain: str
    check: DomainCheck | None = None

    def __call__(
        self, case: Case, volume: Volume, *, known: Mapping[str, Any] | None = None
    ) -> Route:
        if self.check is None:
            return Route(self.domain)
        identify: Any = self.check.identify
        recognition = identify(volume) if known is None else identify(volume, known=known)
        entry: dict[str, Any] = recognition.to_dict(expected=self.domain)
        warning = None if recognition.ood else entry.get("warning")  # OOD: the verdict says it
        return Route(self.domain, entry, (str(warning),) if warning else ())


def fixed_domain(domain: str, check: DomainCheck | None = None) -> FixedDomain:
    """Every scan as ``domain``; with ``check``, each scan is also compared with the profiles."""
    return FixedDomain(domain, check)


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
