"""Reading the next case of a batch while the current one runs (:mod:`pedseg.inference.batch`).

One background thread stages cases (reads them and, for a known domain, prepares their slices), one
after another in input order and at most one case ahead of the one being predicted. A staging error
is raised by the future's ``result()``, i.e. where the batch handles that case's failure.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from pedseg.data.preprocess import SliceStack
from pedseg.inference.cases import Case
from pedseg.io.volume import Volume

__all__ = ["Prefetch", "Staged", "Stager"]


@dataclass(frozen=True, eq=False)
class Staged:
    """A case read (and prepared for a known domain's predictor) ahead of its turn."""

    volume: Volume
    read_s: float
    stack: SliceStack | None = None
    prepare_s: float = 0.0


Stager = Callable[[Case], Staged]


class Prefetch:
    """Stages the next case in a background thread (one case ahead at most)."""

    def __init__(self, *, enabled: bool) -> None:
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="pedseg-prefetch") if enabled else None
        )
        self._pending: tuple[Case, Future[Staged]] | None = None

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, case: Case, stage: Stager) -> None:
        """Start staging ``case`` in the background (the thread stages one case after another)."""
        if self._pool is not None:
            self._pending = (case, self._pool.submit(stage, case))

    def start(self, case: Case, stage: Stager) -> Future[Staged] | None:
        """Stage ``case`` now, in the thread (so cases are read in order); None when disabled."""
        return self._pool.submit(stage, case) if self._pool is not None else None

    def take(self, case: Case) -> Future[Staged] | None:
        """The staging of ``case`` when it was submitted (its error is raised by ``result()``)."""
        pending, self._pending = self._pending, None
        return pending[1] if pending is not None and pending[0] is case else None
