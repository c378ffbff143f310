"""The in-process CLI runner of tests/cli, for workflow commands."""

from tests.cli.conftest import pedseg

__all__ = ["pedseg"]
