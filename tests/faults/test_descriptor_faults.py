"""Hostile domain descriptors through ``pedseg add-domain`` and ``pedseg domains list``: deep
nesting, an alias bomb, a huge file. One short line, exit 1, nothing registered; the listing stays
fast and names the file it skipped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pedseg.errors import MAX_MESSAGE_CHARS
from tests.cli.conftest import Runner, one_line_error
from tests.domains.test_yamlio import ALIAS_BOMB
from tests.fs_faults import snapshot

KNEE = """\
schema_version: 1
name: knee
labels: {1: femur, 2: tibia}
normalization: zscore
"""


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (KNEE + "extra: " + "[" * 999 + "]" * 999, "line 5, column 23: nested more than 16"),
        (ALIAS_BOMB, "line 1, column 4: anchors and aliases (&name, *name) are not allowed"),
        (None, "<file>: is 209715200 bytes, more than the 64 KiB a descriptor may hold"),
    ],
    ids=["deep", "alias-bomb", "200MB"],
)
def test_add_domain_refuses_hostile_descriptor(
    pedseg: Runner, tmp_path: Path, isolated_home: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "knee.yaml"
    if content is None:
        _sparse(path, 200 * 1024**2)
    else:
        path.write_text(content)
    start = time.perf_counter()
    result = pedseg("add-domain", str(path))
    assert time.perf_counter() - start < 2.0
    line = one_line_error(result)
    assert line.startswith(f"error: {path}: {message}")
    assert len(line) <= len("error: ") + MAX_MESSAGE_CHARS
    assert snapshot(isolated_home) == {}


def test_domains_list_skips_a_huge_user_file_fast(pedseg: Runner, isolated_home: Path) -> None:
    registry = isolated_home / "domains"
    registry.mkdir()
    (registry / "knee.yaml").write_text(KNEE)
    _sparse(registry / "huge.yaml", 200 * 1024**2)
    start = time.perf_counter()
    result = pedseg("domains", "list")
    assert time.perf_counter() - start < 2.0
    assert result.code == 0, result.err
    assert "knee" in result.out and "ankle" in result.out
    warning = [line for line in result.out.splitlines() if line.startswith("warning: ")]
    assert warning == [
        f"warning: skipped huge (user): {registry / 'huge.yaml'}: <file>: is 209715200 bytes, "
        "more than the 64 KiB a descriptor may hold; a descriptor is a short YAML file (see "
        "domains/*.yaml)"
    ]
