"""Clinical outputs of a segmentation: label map, 3D Slicer ``.seg.nrrd``, DICOM-SEG, surface meshes
(STL/PLY/OBJ), per-label statistics and a 3D preview; see docs/outputs.md.

Importing this package is cheap (option parsing and planning only); the writers (trimesh,
scikit-image, highdicom, pynrrd, matplotlib) load on first use of :func:`write_case_outputs` or
:func:`merge_statistics_csv`, or from their modules (:mod:`pedseg.outputs.case`, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pedseg.domains.output_names import DEFAULT_FORMATS, FORMATS, MESH_FORMATS
from pedseg.outputs.options import MeshOptions, OutputFormats, parse_outputs
from pedseg.outputs.plan import CasePlan, mesh_key, plan_case_outputs

if TYPE_CHECKING:
    from pedseg.outputs.case import WrittenOutputs, write_case_outputs
    from pedseg.outputs.stats import merge_statistics_csv

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "MESH_FORMATS",
    "CasePlan",
    "MeshOptions",
    "OutputFormats",
    "WrittenOutputs",
    "merge_statistics_csv",
    "mesh_key",
    "parse_outputs",
    "plan_case_outputs",
    "write_case_outputs",
]

_LAZY = {
    "WrittenOutputs": "pedseg.outputs.case",
    "write_case_outputs": "pedseg.outputs.case",
    "merge_statistics_csv": "pedseg.outputs.stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pedseg.outputs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
