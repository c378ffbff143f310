"""Atomic writes: complete or absent, ordinary permissions, no silent overwrite."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pedseg.errors import OutputError, OutputExistsError
from pedseg.io.atomic import atomic_path, make_folder, write_bytes_atomic, write_text_atomic
from tests.fs_faults import fail_writes, files_below


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


# ------------------------------------------------------------------ OSError on output: one line


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, "Read-only file system; choose a writable folder"),
        (errno.EACCES, "Permission denied; check the permissions or choose another folder"),
        (errno.ENOSPC, "No space left on device; free some space"),
    ],
)
def test_unwritable_folder_is_one_output_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    fail_writes(monkeypatch, folder, code=code)
    target = folder / "seg.nii.gz"
    with pytest.raises(OutputError) as info:
        write_text_atomic(target, "x")
    assert str(info.value) == f"{target}: cannot be written: {words}" + (
        " or write elsewhere" if code == errno.ENOSPC else ""
    )
    monkeypatch.undo()
    assert files_below(folder) == []


def test_missing_subfolder_of_read_only_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writes(monkeypatch, tmp_path / "ro")
    target = tmp_path / "ro" / "a" / "b.json"
    with pytest.raises(OutputError, match=r"b.json: cannot be written: Read-only file system"):
        write_text_atomic(target, "x")
    monkeypatch.undo()
    assert files_below(tmp_path) == []


def test_failure_moving_into_place_removes_temp_and_new_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_writes(monkeypatch, tmp_path, code=errno.ENOSPC, ops=("replace", "rename"))
    target = tmp_path / "new" / "deeper" / "seg.nii.gz"
    with pytest.raises(OutputError, match=r"deeper/seg.nii.gz: cannot be written: No space"):
        write_bytes_atomic(target, b"voxels")
    monkeypatch.undo()
    assert files_below(tmp_path) == []  # the folders made for it are gone too


def test_disk_full_while_writing(tmp_path: Path) -> None:
    target = tmp_path / "out" / "big.bin"
    no_space = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() reports it
    with (
        pytest.raises(OutputError, match=r"big.bin: cannot be written: No space left"),
        atomic_path(target) as tmp,
        tmp.open("wb") as fh,
    ):
        fh.write(b"partial")
        raise no_space
    assert files_below(tmp_path) == []


def test_existing_folder_is_kept_on_failure(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "mine" / "x.txt"):
        raise RuntimeError("crash")
    assert files_below(tmp_path) == ["mine"]


def test_path_component_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    target = blocker / "sub" / "seg.nii.gz"
    with pytest.raises(OutputError) as info:
        write_text_atomic(target, "x")
    assert str(info.value) == (
        f"{target}: cannot be written: Not a directory; {blocker} is a file, not a folder; "
        "choose another path"
    )
    assert files_below(tmp_path) == ["notes.txt"] and blocker.read_text() == "mine"


def test_name_too_long(tmp_path: Path) -> None:
    target = tmp_path / ("x" * 300 + ".nii.gz")
    with pytest.raises(OutputError, match="File name too long; choose a shorter name or path"):
        write_text_atomic(target, "x", overwrite=False)
    folder = tmp_path / ("d" * 256) / "seg.nii.gz"
    with pytest.raises(OutputError, match="File name too long"):
        write_text_atomic(folder, "x")
    assert files_below(tmp_path) == []


def test_make_folder(tmp_path: Path) -> None:
    assert make_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match=r"f/g: cannot be written: Not a directory"):
        make_folder(tmp_path / "f" / "g")


def test_oserror_about_another_file_is_not_blamed_on_the_output(tmp_path: Path) -> None:
    elsewhere = tmp_path / "inputs" / "scan.nii.gz"
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out" / "seg.nii.gz"):
        elsewhere.read_bytes()
    assert files_below(tmp_path) == []


def test_nested_atomic_write_names_the_real_destination(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    with pytest.raises(OutputError) as info, atomic_path(target) as tmp:
        fail_writes(monkeypatch, tmp_path, code=errno.ENOSPC, ops=("open",))
        write_text_atomic(tmp, "{}")  # a writer that itself writes atomically onto our temp
    monkeypatch.undo()
    assert info.value.path == str(target) and str(info.value).startswith(f"{target}: ")
    assert files_below(tmp_path) == []


def test_read_only_folder_with_chmod(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        probe = folder / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("running as root: chmod does not stop writes (see the simulated tests)")
        with pytest.raises(OutputError, match="Permission denied"):
            write_text_atomic(folder / "a.txt", "x")
        assert files_below(folder) == []
    finally:
        folder.chmod(0o755)
