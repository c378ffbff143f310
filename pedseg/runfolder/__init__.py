"""The run folder as one contract: its layout, the model card, integrity, loading and profiles.

Everything that reads or writes a run folder goes through this package (training saves through it,
inference, export and evaluation read through it); no other module names a run-folder file.

Submodules: :mod:`~pedseg.runfolder.layout` (file names), :mod:`~pedseg.runfolder.card` (the typed
``model.json``), :mod:`~pedseg.runfolder.integrity` (SHA-256 of every artifact),
:mod:`~pedseg.runfolder.pointer` (``last_run``), :mod:`~pedseg.runfolder.checkpoint` (resumable
state), :mod:`~pedseg.runfolder.writer` (weights + card), :mod:`~pedseg.runfolder.metrics`
(``metrics.csv``, ``curves.png``), :mod:`~pedseg.runfolder.loading` (a run's per-domain
segmenters) and :mod:`~pedseg.runfolder.profiles` (domain profiles). This package's namespace holds
only the light ones, so that importing it does not import torch.
"""

from __future__ import annotations

from pedseg.runfolder.integrity import file_sha256, verify_sha256
from pedseg.runfolder.layout import RunLayout, is_run_folder
from pedseg.runfolder.pointer import last_run, resolve_run, set_last_run

__all__ = [
    "RunLayout",
    "file_sha256",
    "is_run_folder",
    "last_run",
    "resolve_run",
    "set_last_run",
    "verify_sha256",
]
