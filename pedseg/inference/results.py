"""What a batch reports: each case's result, progress events and the whole batch's result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pedseg.inference.cases import Case
from pedseg.inference.routing import Route

__all__ = ["BatchEvent", "BatchResult", "CaseResult", "Status"]

Status = Literal["done", "failed", "skipped", "busy"]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    status: Status
    outputs: tuple[Path, ...] = ()
    reason: str = ""
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    domain: str | None = None
    warnings: tuple[str, ...] = ()
    ood_warning: str | None = None
    """The out-of-distribution verdict's warning (known once the case is predicted)."""


@dataclass(frozen=True)
class BatchEvent:
    """Progress: ``start`` (total known), ``case_start``, ``routed`` (the case's :class:`Route`:
    domain, warnings), ``case_end`` (with the result)."""

    kind: Literal["start", "case_start", "routed", "case_end"]
    index: int
    total: int
    case: Case | None = None
    result: CaseResult | None = None
    route: Route | None = None


@dataclass(frozen=True)
class BatchResult:
    results: tuple[CaseResult, ...]
    manifest: Path | None
    backend: str
    device: str

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)
