"""Atomic writes: complete or absent, ordinary permissions, no silent overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pedseg.errors import OutputExistsError
from pedseg.io.atomic import atomic_path, write_text_atomic


def test_write_and_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    write_text_atomic(target, "hello")
    assert target.read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "b.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_refuses_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "c.txt"
    target.write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists"):
        write_text_atomic(target, "theirs", overwrite=False)
    assert target.read_text() == "mine"
    write_text_atomic(target, "theirs", overwrite=True)
    assert target.read_text() == "theirs"
