"""Names of the clinical output formats and their limits (no heavy imports: the descriptor uses it).

``nifti`` is the label map itself; ``seg-nrrd`` a 3D Slicer segmentation; ``dicom-seg`` a DICOM
Segmentation object (DICOM series inputs only); ``mesh`` one surface per label (``mesh_format`` stl,
ply or obj; ``mesh-stl``/``mesh-ply``/``mesh-obj`` are shorthands); ``stats`` per-label morphometry;
``preview-3d`` a PNG rendering of the meshes.
"""

from __future__ import annotations

from difflib import get_close_matches

FORMATS = ("nifti", "seg-nrrd", "dicom-seg", "mesh", "stats", "preview-3d")
MESH_FORMATS = ("stl", "ply", "obj")
MESH_ALIASES = {f"mesh-{fmt}": fmt for fmt in MESH_FORMATS}
DEFAULT_FORMATS = ("nifti",)
DEFAULT_MESH_FORMAT = "stl"
DEFAULT_SMOOTHING = 20  # Taubin passes (each one shrink or inflate step)
MAX_SMOOTHING = 500
MESH_BASED = frozenset({"mesh", "stats", "preview-3d"})


def choices() -> str:
    """Every accepted spelling of a format, for messages."""
    return ", ".join([*FORMATS, *MESH_ALIASES])


def did_you_mean(value: str, known: tuple[str, ...] | list[str]) -> str:
    """``"; did you mean 'mesh-stl'?"`` or ``""``."""
    close = get_close_matches(value, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


LABEL_COLORS = (  # label k of a domain (in descriptor order) gets colour k, everywhere
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
)
