"""Atomic file writes: every file pedseg writes is complete or absent.

Any :class:`OSError` while creating an output's folder, its temporary file, writing it or moving it
into place (read-only folder, disk full, name too long, a path component that is a file) becomes an
:class:`~pedseg.errors.OutputError` naming the output path; the temporary file and any folder this
write created are removed, so a failed write leaves the disk as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pedseg.errors import OutputError, OutputExistsError


def _file_mode() -> int:
    """The mode an ordinary new file gets here (0o666 less the umask); mkstemp would give 0o600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _create_folders(folder: Path, *, target: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders created, deepest first.

    An OSError becomes an :class:`OutputError` naming ``target`` (folders created so far are
    removed again)."""
    missing: list[Path] = []
    created: list[Path] = []
    try:
        probe = folder
        while not probe.is_dir():
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:
                if not path.is_dir():
                    code = errno.ENOTDIR
                    raise NotADirectoryError(code, os.strerror(code), str(path)) from None
                continue  # created meanwhile by another process: not ours to remove
            created.append(path)
    except OSError as error:
        remove_empty_folders(created[::-1])
        raise OutputError(target, error) from None
    return created[::-1]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; others are left alone."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def make_folder(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` for an output folder; an OSError becomes an :class:`OutputError` naming it."""
    folder = Path(path)
    _create_folders(folder, target=folder)
    return folder


def _concerns(error: OSError, folder: Path) -> bool:
    """Whether ``error`` (raised while writing) is about a file below the output's ``folder`` (the
    temporary file, the destination or a writer's own temporary) rather than some other file."""
    names = [n for n in (error.filename, error.filename2) if n is not None]
    if not names:
        return True
    here = (folder.absolute(), folder.resolve())
    for name in names:
        file = Path(os.fsdecode(name)).absolute()
        if any(file.is_relative_to(root) for root in here):
            return True
    return False


@contextlib.contextmanager
def output_errors(
    path: str | os.PathLike[str], *, folder: str | os.PathLike[str] | None = None
) -> Iterator[None]:
    """Turn an :class:`OSError` about a file below ``folder`` (default: ``path``'s folder), or
    about no file at all (a full disk), into an :class:`OutputError` naming ``path``.

    For writers that build a whole folder (caches, checkpoints) rather than one file."""
    where = Path(folder) if folder is not None else Path(path).parent
    try:
        yield
    except OSError as error:
        if not _concerns(error, where):
            raise
        raise OutputError(path, error) from None


def _exists(dest: Path) -> bool:
    try:
        return dest.exists()
    except OSError as error:  # a name too long, a folder that cannot be searched
        raise OutputError(dest, error) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; move it into place on success.

    The temporary file keeps the destination's suffixes (``.nii.gz``) so that writers choosing a
    format from the file name behave. On any exception the temporary file (and any folder created
    for it) is removed and the destination is left untouched; an :class:`OSError` about the output
    becomes an :class:`~pedseg.errors.OutputError` naming ``path``.
    """
    dest = Path(path)
    if not overwrite and _exists(dest):
        raise OutputExistsError(dest)
    created = _create_folders(dest.parent, target=dest)
    suffix = "".join(dest.suffixes) if dest.suffixes else ""
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent
        )
        os.close(fd)
    except OSError as error:
        remove_empty_folders(created)
        raise OutputError(dest, error) from None
    tmp = Path(tmp_name)
    done = False
    try:
        try:
            yield tmp
        except OSError as error:
            if not _concerns(error, dest.parent):
                raise
            raise OutputError(dest, error) from None
        except OutputError as error:
            if error.path != str(tmp):  # a nested atomic write onto our temporary file
                raise
            raise OutputError(dest, error.detail) from None
        if not overwrite and _exists(dest):
            raise OutputExistsError(dest)
        try:
            tmp.chmod(_FILE_MODE)
            tmp.replace(dest)
        except OSError as error:
            raise OutputError(dest, error) from None
        done = True
    finally:
        if not done:
            with contextlib.suppress(OSError):
                tmp.unlink()
            remove_empty_folders(created)


def write_bytes_atomic(
    path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp, tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)
