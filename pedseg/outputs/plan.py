"""Where each output of a case goes, known before any work (refusing existing files, ``--continue``).

For a case stem ``OUT/case`` (a path without suffix):

| format | file(s) |
|---|---|
| nifti | ``OUT/case.nii.gz`` |
| seg-nrrd | ``OUT/case.seg.nrrd`` |
| dicom-seg | ``OUT/case_seg.dcm`` |
| mesh | ``OUT/case_<label>.<stl/ply/obj>``, one per label of the domain (empty when absent) |
| stats | ``OUT/case_statistics.csv`` (one row per label) |
| preview-3d | ``OUT/case_preview3d.png`` |

Label names become file names with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``;
when two labels of a domain would share a name, every mesh name gets its label id (``case_2_a_b``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pedseg.errors import ConfigError
from pedseg.outputs.options import OutputFormats

if TYPE_CHECKING:
    from pedseg.domains.spec import DomainSpec

__all__ = ["STATISTICS_SUFFIX", "CasePlan", "mesh_key", "plan_case_outputs"]

STATISTICS_SUFFIX = "_statistics.csv"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def mesh_key(label: str) -> str:
    """The key of a label's mesh in :attr:`CasePlan.files` (``"mesh:femur"``)."""
    return f"mesh:{label}"


@dataclass(frozen=True)
class CasePlan:
    """Every file a case's outputs will write, by kind (``nifti``, ``mesh:<label>``, ...)."""

    stem: Path
    files: dict[str, Path]

    def paths(self) -> list[Path]:
        return list(self.files.values())

    def existing(self) -> list[Path]:
        return [path for path in self.files.values() if path.exists()]


def _with(stem: Path, tail: str) -> Path:
    return stem.with_name(stem.name + tail)


def _mesh_names(spec: DomainSpec) -> dict[str, str]:
    slugs = {name: _UNSAFE.sub("_", name) for name in spec.label_names}
    if len(set(slugs.values())) == len(slugs):
        return slugs
    return {name: f"{label_id}_{slugs[name]}" for label_id, name in spec.labels}


def plan_case_outputs(
    stem: Path,
    formats: OutputFormats,
    spec: DomainSpec,
    *,
    dicom_input: bool,
    nifti_suffix: str = ".nii.gz",
) -> CasePlan:
    """The files :func:`pedseg.outputs.case.write_case_outputs` writes for ``stem``.

    ``dicom_input``: whether the case's input is a DICOM series (``dicom-seg`` needs one and is
    refused otherwise, before any work). ``nifti_suffix``: ``.nii.gz``, ``.nii``, ``.mha`` or
    ``.nrrd`` for the label map (pedseg's single-file ``--out seg.mha``).
    """
    if "dicom-seg" in formats and not dicom_input:
        raise ConfigError(
            f"--outputs dicom-seg needs a DICOM series folder as input; {stem.name} is not one "
            "(drop dicom-seg or predict the DICOM folder)"
        )
    files: dict[str, Path] = {}
    if "nifti" in formats:
        files["nifti"] = _with(stem, nifti_suffix)
    if "seg-nrrd" in formats:
        files["seg-nrrd"] = _with(stem, ".seg.nrrd")
    if "dicom-seg" in formats:
        files["dicom-seg"] = _with(stem, "_seg.dcm")
    if "mesh" in formats:
        ext = formats.mesh.format
        for label, name in _mesh_names(spec).items():
            files[mesh_key(label)] = _with(stem, f"_{name}.{ext}")
    if "stats" in formats:
        files["stats"] = _with(stem, STATISTICS_SUFFIX)
    if "preview-3d" in formats:
        files["preview-3d"] = _with(stem, "_preview3d.png")
    return CasePlan(stem=stem, files=files)
