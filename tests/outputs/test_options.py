"""--outputs / --mesh-format parsing: canonical names, shorthands, descriptor defaults, one-line
errors with a did-you-mean."""

from __future__ import annotations

import pytest

from pedseg.errors import ConfigError
from pedseg.outputs import MeshOptions, OutputFormats, parse_outputs
from tests.outputs.conftest import phantom_spec


def test_list_is_parsed_in_canonical_order() -> None:
    formats = parse_outputs("stats, mesh-ply,nifti,seg-nrrd")
    assert formats.formats == ("nifti", "seg-nrrd", "mesh", "stats")
    assert formats.mesh.format == "ply"
    assert "mesh" in formats and "dicom-seg" not in formats
    assert formats.needs_meshes
    assert parse_outputs(["nifti", "preview-3d"]).formats == ("nifti", "preview-3d")


def test_defaults() -> None:
    formats = parse_outputs()
    assert formats == OutputFormats(formats=("nifti",), mesh=MeshOptions("stl", 20, 1.0))
    assert not formats.needs_meshes
    assert formats.without("nifti").formats == ()


def test_descriptor_defaults_and_cli_precedence() -> None:
    spec = phantom_spec(formats=["nifti", "mesh-obj"], smoothing=5, decimate=0.5)
    formats = parse_outputs(spec=spec)
    assert formats.formats == ("nifti", "mesh") and formats.mesh == MeshOptions("obj", 5, 0.5)
    override = parse_outputs("stats", mesh_format="stl", smoothing=0, spec=spec)
    assert override.formats == ("stats",) and override.mesh == MeshOptions("stl", 0, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"outputs": "nifti,mesh-xyz"}, "--outputs: unknown format 'mesh-xyz'; did you mean"),
        ({"outputs": "segnrrd"}, "did you mean 'seg-nrrd'?"),
        ({"outputs": " , "}, "--outputs: give at least one format"),
        ({"outputs": "mesh-stl,mesh-ply"}, "names two mesh formats"),
        ({"outputs": "mesh-ply", "mesh_format": "stl"}, "conflicts with --mesh-format stl"),
        ({"outputs": "mesh", "mesh_format": "vtk"}, "--mesh-format: unknown format 'vtk'"),
        ({"outputs": "mesh", "mesh_format": "stll"}, "did you mean 'stl'?"),
        ({"outputs": "mesh", "smoothing": -1}, "--mesh-smoothing must be an integer in [0, 500]"),
        ({"outputs": "mesh", "decimate": 0.0}, "--mesh-decimate must be the fraction"),
        ({"outputs": "mesh", "decimate": 1.5}, "got 1.5"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_outputs(**kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert expected in message and "\n" not in message
    if "unknown format 'mesh-xyz'" in message:
        assert "choose from nifti, seg-nrrd, dicom-seg, mesh, stats, preview-3d" in message


def test_formats_dataclass_refuses_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown format 'nope'"):
        OutputFormats(formats=("nope",))
