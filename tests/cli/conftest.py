"""In-process CLI runner: exit code, stdout and stderr of ``pedseg ARGS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pedseg.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str


Runner = Callable[..., Result]


@pytest.fixture
def pedseg(capsys: pytest.CaptureFixture[str]) -> Runner:
    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def one_line_error(result: Result) -> str:
    """Assert the result is a clean failure: exit 1, a single ``error:`` line on stderr."""
    assert result.code == 1, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.err
    return lines[0]
