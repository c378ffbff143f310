"""The descriptor's optional ``outputs:`` section: strict validation, round trip, and no effect on
the content hash (trained runs store it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.domains.builtin import builtin_domains_dir
from pedseg.domains.registry import load_descriptor
from pedseg.domains.spec import parse_descriptor
from pedseg.domains.yamlio import dump_yaml
from pedseg.errors import DescriptorError

# Content hashes of the built-in descriptors: ankle and shoulder as before the outputs section
# existed; pelvis and spine since their ``augment: {flip: ...}`` (a different training task: the
# paper's width flip turned the pelvis upside down); spine since its ``chain_anchor: L5`` (its
# vertebrae are renumbered from L5). Runs keep their own copy of the descriptor.
HASHES = {
    "ankle": "4dc39f4a3e45491528eae7c1ba536295bbe2f07b3e580b3359b4b8ebabe8830e",
    "shoulder": "808b3c0306957f103119ae49fe89eedd67de9b64bc59a1728d418d0a12e111e3",
    "pelvis": "182b74aba1c2bc9d3258bfd1b6df6112cd527a97cc416c05e31c7dcc5db91603",
    "spine": "8bae1c02a464b703cae70dd9763b0f3ee7733f191a6f25cbd0b679d729c66dd5",
}
BASE = """\
schema_version: 1
name: knee
labels: {1: femur, 2: tibia}
normalization: zscore
"""
SECTION = """\
outputs:
  formats: [nifti, seg-nrrd, mesh-ply, stats]
  smoothing: 10
  decimate: 0.5
  codes:
    femur: {scheme: SCT, value: "71341001", meaning: Femur}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "knee.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(HASHES))
def test_builtin_hashes_unchanged(name: str) -> None:
    spec = load_descriptor(builtin_domains_dir() / f"{name}.yaml")
    assert spec.outputs is None
    assert spec.content_hash() == HASHES[name]
    assert "outputs" not in spec.to_dict()


def test_section_parses_round_trips_and_keeps_the_hash(tmp_path: Path) -> None:
    plain = load_descriptor(write(tmp_path, BASE))
    spec = load_descriptor(write(tmp_path, BASE + SECTION))
    out = spec.outputs
    assert out is not None
    assert out.formats == ("nifti", "seg-nrrd", "mesh", "stats") and out.mesh_format == "ply"
    assert (out.smoothing, out.decimate) == (10, 0.5)
    code = out.code_for("femur")
    assert code is not None and (code.scheme, code.value, code.meaning) == (
        "SCT",
        "71341001",
        "Femur",
    )
    assert out.code_for("tibia") is None
    assert spec.content_hash() == plain.content_hash()
    again = parse_descriptor(spec.to_dict(), source="<dict>")
    assert again.outputs == spec.outputs
    reloaded = load_descriptor(write(tmp_path, dump_yaml(spec.to_dict())))
    assert reloaded.outputs == spec.outputs


@pytest.mark.parametrize(
    ("section", "field", "message"),
    [
        ("outputs: [nifti]", "outputs", "must be a mapping"),
        ("outputs: {format: [nifti]}", "outputs.format", "did you mean 'formats'?"),
        ("outputs: {formats: [nifti, mesh-xyz]}", "outputs.formats", "unknown format 'mesh-xyz'"),
        ("outputs: {formats: []}", "outputs.formats", "non-empty list"),
        ("outputs: {formats: [mesh-stl, mesh-obj]}", "outputs.formats", "two mesh formats"),
        ("outputs: {mesh_format: vtk}", "outputs.mesh_format", "must be one of stl, ply, obj"),
        (
            "outputs: {formats: [mesh-stl], mesh_format: ply}",
            "outputs.mesh_format",
            "names mesh-stl",
        ),
        ("outputs: {smoothing: 2.5}", "outputs.smoothing", "integer in [0, 500]"),
        ("outputs: {smoothing: true}", "outputs.smoothing", "integer"),
        ("outputs: {decimate: 0}", "outputs.decimate", "in (0, 1]"),
        (
            "outputs: {codes: {femr: {value: '1', meaning: x}}}",
            "outputs.codes.femr",
            "did you mean 'femur'",
        ),
        (
            "outputs: {codes: {femur: {value: 71341001, meaning: x}}}",
            "outputs.codes.femur.value",
            "quote it",
        ),
        (
            "outputs: {codes: {femur: {value: '1'}}}",
            "outputs.codes.femur.meaning",
            "1-64 characters",
        ),
        (
            "outputs: {codes: {femur: {value: '1', meaning: x, scheme: 'sct'}}}",
            "outputs.codes.femur.scheme",
            "coding scheme",
        ),
        (
            "outputs: {codes: {femur: {value: '1', meaning: x, colour: red}}}",
            "outputs.codes.femur.colour",
            "unknown key",
        ),
    ],
)
def test_bad_sections_name_file_and_field(
    tmp_path: Path, section: str, field: str, message: str
) -> None:
    path = write(tmp_path, BASE + section + "\n")
    with pytest.raises(DescriptorError) as info:
        load_descriptor(path)
    text = str(info.value)
    assert "\n" not in text
    assert f"{path}: {field}: " in text and message in text
