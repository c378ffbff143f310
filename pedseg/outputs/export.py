"""``pedseg export-seg``'s library side: convert an existing label map on an image's grid.

The label map is read (:func:`pedseg.io.read_label`), checked to lie on the image's grid
(:func:`pedseg.io.check_pair`), and handed with the image to
:func:`pedseg.outputs.case.write_case_outputs`. Without a domain, labels are named ``label_<id>``
for ids 1..max present.
"""

from __future__ import annotations

from pathlib import Path

from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.errors import ConfigError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.readers import volume_suffix
from pedseg.outputs.case import WrittenOutputs, write_case_outputs
from pedseg.outputs.options import OutputFormats
from pedseg.outputs.plan import plan_case_outputs

__all__ = ["case_stem", "export_segmentation", "generic_spec"]


def generic_spec(max_label: int) -> DomainSpec:
    """A domain for a label map of unknown origin: labels ``label_1`` .. ``label_<max_label>``."""
    count = max(int(max_label), 1)
    raw = {
        "schema_version": 1,
        "name": "labels",
        "labels": {i: f"label_{i}" for i in range(1, count + 1)},
        "normalization": "zscore",
    }
    return parse_descriptor(raw, source="<export-seg>")


def _case_name(path: Path) -> str:
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix and path.is_file() else path.name


def case_stem(labels: Path, out: Path | None) -> Path:
    """Where the outputs go: ``out/<labels name>`` for a folder ``out``, ``out`` less its volume
    suffix otherwise, beside ``labels`` by default."""
    if out is None:
        return labels.with_name(_case_name(labels))
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / _case_name(labels)
    suffix = volume_suffix(out)
    return out.with_name(out.name[: len(out.name) - len(suffix)]) if suffix else out


def export_segmentation(
    labels: Path,
    like: Path,
    *,
    formats: OutputFormats,
    spec: DomainSpec | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    model_sha256: str | None = None,
) -> WrittenOutputs:
    """Write ``formats`` of label map ``labels`` drawn on image ``like`` (a file or DICOM folder)."""
    stem = case_stem(labels, out)
    dicom = like.is_dir()
    sources = {labels.resolve(), like.resolve()}
    probe = spec if spec is not None else generic_spec(1)
    for path in plan_case_outputs(stem, formats, probe, dicom_input=dicom).paths():
        if path.resolve() in sources or (dicom and path.resolve().is_relative_to(like.resolve())):
            raise ConfigError(
                f"output {path} would replace or sit inside an input; choose another --out"
            )
    image = read_volume(like)
    label_map = read_label(labels, allowed=None if spec is None else {0, *spec.label_ids})
    check_pair(image, label_map)
    chosen = spec if spec is not None else generic_spec(int(label_map.array.max(initial=0)))
    return write_case_outputs(
        label_map.array,
        image,
        chosen,
        formats=formats,
        stem=stem,
        overwrite=overwrite,
        model_sha256=model_sha256,
        case=_case_name(labels),
    )
