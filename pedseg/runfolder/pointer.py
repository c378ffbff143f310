"""Which run folder a command means: ``--model PATH`` or the most recent run (``last_run``)."""

from __future__ import annotations

from pathlib import Path

from pedseg.domains.registry import pedseg_home
from pedseg.errors import ModelError
from pedseg.io.atomic import write_text_atomic
from pedseg.runfolder.layout import RunLayout

__all__ = ["last_run", "resolve_run", "set_last_run"]

LAST_RUN = "last_run"


def set_last_run(path: Path) -> None:
    """Record ``path`` as the most recent run (``pedseg_home()/last_run``)."""
    write_text_atomic(pedseg_home() / LAST_RUN, str(Path(path).resolve()) + "\n")


def last_run() -> Path | None:
    """The most recent run folder, if recorded and still there."""
    try:
        text = (pedseg_home() / LAST_RUN).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    path = Path(text)
    return path if path.is_dir() else None


def resolve_run(path: Path | None) -> RunLayout:
    """The layout of ``path``, or of the most recent run when ``None``; it must hold a card."""
    if path is None:
        found = last_run()
        if found is None:
            raise ModelError(
                "no trained model found (no recent run is recorded); pass --model RUN_FOLDER "
                "or train one with `pedseg train`"
            )
        path = found
    layout = RunLayout(Path(path).expanduser())
    if not layout.root.is_dir():
        raise ModelError(
            f"{layout.root}: no such run folder; pass --model with a folder written by "
            "`pedseg train`"
        )
    if not layout.card.is_file():
        raise ModelError(
            f"{layout.root}: not a run folder (no {layout.card.name}); pass --model with a folder "
            "written by `pedseg train`"
        )
    return layout
