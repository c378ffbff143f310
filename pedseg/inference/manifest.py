"""The state of a prediction output folder, safe under concurrent runs and kills.

``OUT/pedseg-predict.json`` (the manifest) records every case predicted there: its status
(``running``, ``done`` or ``failed`` with the reason), input, output files (relative to ``OUT``),
domain, model hash and the history of its attempts (status, process id, time). Any number of
``pedseg predict`` processes may write into one folder at once:

* every manifest update re-reads the file and rewrites it atomically while holding an exclusive
  lock, so no process's record is lost;
* a process works on a case only while it holds that case's lock, so two processes never work on
  the same case (the other one skips it as ``busy``);
* both are byte-range locks (POSIX ``fcntl``) on one hidden file, ``OUT/.pedseg-predict.lock``,
  which the operating system releases when a process exits or is killed: nothing goes stale.

A case is done only when all its outputs and its ``done`` record are in place. A case interrupted
in between (killed, crashed) stays ``running`` in the manifest; the next run with ``--continue``
redoes it, replacing only the outputs its record lists as its own, and removes the temporary
files the killed process left; so is a done case one of whose outputs has gone. A manifest that is not pedseg's is refused, never merged into.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pedseg import __version__
from pedseg.errors import ConfigError, OutputError, OutputExistsError
from pedseg.io.atomic import make_folder, write_text_atomic

if TYPE_CHECKING:
    from pedseg.inference.cases import BatchPlan

try:  # POSIX; elsewhere the folder is not protected against concurrent runs (logged once)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "FolderLock",
    "OutputManifest",
    "folder_state",
    "refuse_existing",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "pedseg-predict.json"
LOCK_NAME = ".pedseg-predict.lock"
MANIFEST_FORMAT = 2
READABLE_FORMATS = (1, 2)
TOOL = "pedseg predict"
_STATUSES = ("running", "done", "failed")
_CASE_BYTES = 2**31 - 2  # case locks live at bytes 1 .. 2**31 - 1 of the lock file


class FolderLock:
    """The locks of one output folder (see the module docstring).

    POSIX record locks belong to the process and are dropped when *any* of its descriptors of the
    file is closed, so one process keeps exactly one :class:`FolderLock` per folder open.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._held: set[int] = set()
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning("no file locking on this platform: do not predict into %s twice", folder)
            return
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the folder is not writable: name it, as any output would
            raise OutputError(Path(folder), exc) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._held.clear()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _byte(name: str) -> int:
        return 1 + zlib.crc32(name.encode("utf-8")) % _CASE_BYTES

    def try_case(self, name: str) -> bool:
        """Take case ``name``'s lock if no other process holds it (never waits)."""
        if self._fd is None:
            return True
        offset = self._byte(name)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
        except OSError:
            return False
        self._held.add(offset)
        return True

    def release_case(self, name: str) -> None:
        offset = self._byte(name)
        if self._fd is not None and offset in self._held:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, offset)
            self._held.discard(offset)

    @contextlib.contextmanager
    def manifest(self) -> Iterator[None]:
        """Hold the manifest's lock (waits for other processes' updates, which are short)."""
        if self._fd is None:
            yield
            return
        fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)


class OutputManifest:
    """The manifest of an output folder, read and updated under the folder's lock."""

    def __init__(self, folder: Path, lock: FolderLock) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.lock = lock
        with lock.manifest():
            self._read()  # refuse a manifest that is not pedseg's before any work
            # whoever writes the manifest holds this lock: its temporaries now are a killed run's
            remove_stale_temporaries([self.path])

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{self.path}: not a pedseg manifest (unreadable: {exc}); move it away or choose "
                "another --out"
            ) from None
        cases = data.get("cases", {}) if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("format") not in READABLE_FORMATS
            or not isinstance(cases, dict)
            or not all(isinstance(v, dict) for v in cases.values())
        ):
            raise ConfigError(
                f"{self.path}: not a pedseg manifest (no pedseg format or cases); pedseg will not "
                "replace or merge into it: move it away or choose another --out"
            )
        return data

    def entry(self, name: str) -> dict[str, Any] | None:
        """Case ``name``'s current record (read from disk)."""
        with self.lock.manifest():
            entry = self._read().get("cases", {}).get(name)
        return dict(entry) if isinstance(entry, dict) else None

    def record(
        self,
        name: str,
        *,
        status: str,
        source: Path,
        outputs: Sequence[Path],
        domain: str | None,
        model_sha256: str | None,
        reason: str = "",
    ) -> None:
        """Record case ``name``'s status (re-read, update, atomic rewrite: under the lock)."""
        if status not in _STATUSES:
            raise ValueError(f"status must be one of {_STATUSES}, got {status!r}")
        with self.lock.manifest():
            data = self._read()
            cases = data.setdefault("cases", {})
            previous = cases.get(name, {})
            history = list(previous.get("history", [])) if isinstance(previous, dict) else []
            history.append({"status": status, "pid": os.getpid(), "time": round(time.time(), 3)})
            cases[name] = {
                "status": status,
                "input": str(source),
                "outputs": [self.relative(p) for p in outputs],
                "reason": reason,
                "domain": domain,
                "model_sha256": model_sha256,
                "history": history,
            }
            data.update(format=MANIFEST_FORMAT, tool=TOOL, pedseg_version=__version__)
            data.pop("domain", None)  # format 1 kept one domain and model for the whole folder
            data.pop("model_sha256", None)
            ordered = {k: data[k] for k in ("format", "tool", "pedseg_version")}
            ordered["cases"] = cases
            write_text_atomic(self.path, json.dumps(ordered, indent=2) + "\n")

    def relative(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()

    def owned_outputs(self, name: str) -> set[str]:
        """The outputs case ``name``'s record lists: pedseg wrote them for that case, so a case
        that is not done (interrupted, failed, or an output deleted since) may replace them on
        ``--continue``."""
        entry = self.entry(name)
        if entry is None:
            return set()
        outputs = entry.get("outputs")
        return {str(p) for p in outputs} if isinstance(outputs, list) else set()

    def is_done(
        self, name: str, outputs: Sequence[Path], *, model_sha256: str, domain: str | None
    ) -> bool:
        """Whether ``name`` was done by this model (and ``domain``, when given) and every file of
        ``outputs`` is recorded and still present."""
        entry = self.entry(name)
        if entry is None or entry.get("status") != "done":
            return False
        if entry.get("model_sha256") != model_sha256:
            return False
        if domain is not None and entry.get("domain") != domain:
            return False
        recorded = entry.get("outputs")
        if not isinstance(recorded, list):
            return False
        return all(self.relative(p) in recorded and p.exists() for p in outputs)


def remove_stale_temporaries(outputs: Sequence[Path]) -> list[Path]:
    """Delete the temporary files an interrupted write of ``outputs`` left (``.NAME.*.tmp*``,
    see :func:`pedseg.io.atomic.atomic_path`); call only while holding the case's lock."""
    removed: list[Path] = []
    for output in outputs:  # a writer's own atomic write inside ours nests one level deeper
        patterns = (f".{output.name}.*.tmp*", f"..{output.name}.*.tmp*")
        for stale in (p for pattern in patterns for p in output.parent.glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed.append(stale)
    return removed


# ---------------------------------------------------------------------- a batch's folder
@contextlib.contextmanager
def folder_state(plan: BatchPlan) -> Iterator[tuple[FolderLock | None, OutputManifest | None]]:
    """The output folder's lock and manifest for one batch (none for a single-file output);
    folders the batch made and wrote nothing into are removed again."""
    if plan.folder is None:
        yield None, None
        return
    new = [f for f in (plan.folder, *plan.folder.parents) if not f.exists()]
    make_folder(plan.folder)
    try:
        with FolderLock(plan.folder) as lock:
            yield lock, OutputManifest(plan.folder, lock)
    finally:
        if new and {p.name for p in plan.folder.iterdir()} == {LOCK_NAME}:
            # nothing was written into the folders this run made: leave none of them behind
            with contextlib.suppress(OSError):
                (plan.folder / LOCK_NAME).unlink()
                for folder in new:
                    folder.rmdir()


def refuse_existing(plan: BatchPlan) -> None:
    """Without ``--overwrite`` or ``--continue``, existing outputs are refused before any work."""
    existing = [p for case in plan.cases for p in plan.files(case) if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise OutputExistsError(
            existing[0], f"pass --overwrite to replace it{more}, or --continue to skip done cases"
        )
