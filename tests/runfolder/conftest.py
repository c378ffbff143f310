"""Run-folder test fixtures; the tiny trained runs live in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest_runs import single_thread


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test with one torch thread (tiny models; avoids oversubscribing a shared CPU)."""
    with single_thread():
        yield
