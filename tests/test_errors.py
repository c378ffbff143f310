"""PedsegError messages: one line, never longer than MAX_MESSAGE_CHARS; OSError descriptions."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from pedseg.errors import (
    MAX_MESSAGE_CHARS,
    DescriptorError,
    OutputError,
    PedsegError,
    describe_os_error,
    one_line,
)


def test_message_is_one_line() -> None:
    assert str(PedsegError("a\nb\t c")) == "a b c"


def test_long_message_is_cut_with_an_ellipsis() -> None:
    text = "x" * 10_000
    shown = str(PedsegError(text))
    assert len(shown) == MAX_MESSAGE_CHARS and shown.endswith("…")
    assert str(PedsegError("y" * MAX_MESSAGE_CHARS)) == "y" * MAX_MESSAGE_CHARS


def test_huge_message_is_cut_fast() -> None:
    problems = [("labels", "must be a mapping, got " + "[1, 2], " * 5_000_000)]
    error = DescriptorError("bomb.yaml", problems)
    start = time.perf_counter()
    shown = str(error)
    assert time.perf_counter() - start < 0.1
    assert shown.startswith("bomb.yaml: labels: must be a mapping") and len(shown) == 500


def test_one_line_keeps_short_text() -> None:
    assert one_line("  short  text ") == "short text"


def test_describe_os_error_hints(tmp_path: Path) -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert describe_os_error(full) == "No space left on device; free some space or write elsewhere"
    odd = OSError(errno.EIO, os.strerror(errno.EIO))
    assert describe_os_error(odd) == "Input/output error; check the location and try again"
    error = OutputError(tmp_path / "a.json", "the folder vanished")
    assert str(error) == f"{tmp_path / 'a.json'}: cannot be written: the folder vanished"
    assert error.path == str(tmp_path / "a.json") and error.detail == "the folder vanished"
