"""``pedseg export-seg LABELS --like IMAGE --format …``: clinical outputs of an existing label map."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from pedseg.cli.render import console, ok

FORMAT_HELP = (
    "Comma-separated: nifti, seg-nrrd, dicom-seg (IMAGE must be a DICOM folder), mesh "
    "(or mesh-stl, mesh-ply, mesh-obj), stats, preview-3d (default: the domain's, else nifti)."
)


def export_seg(
    labels: Path = typer.Argument(..., metavar="LABELS", help="Label map (.nii.gz, .mha, .nrrd)."),
    like: Path = typer.Option(
        ..., "--like", help="The image the labels were drawn on: a volume file or DICOM folder."
    ),
    formats: str | None = typer.Option(None, "--format", "-f", help=FORMAT_HELP),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder, or a case path such as out/case (default: beside LABELS).",
    ),
    domain: str | None = typer.Option(
        None, "--domain", "-d", help="Domain naming the labels (names, colours, codes, defaults)."
    ),
    mesh_format: str | None = typer.Option(None, "--mesh-format", help="stl | ply | obj."),
    mesh_smoothing: int | None = typer.Option(
        None, "--mesh-smoothing", help="Taubin smoothing passes (default 20; 0 = none)."
    ),
    mesh_decimate: float | None = typer.Option(
        None, "--mesh-decimate", help="Fraction of mesh faces kept, in (0, 1] (default 1)."
    ),
    model_sha256: str | None = typer.Option(
        None, "--model-sha256", help="Hash of the model that made LABELS (DICOM-SEG algorithm)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Write a label map as Slicer .seg.nrrd, DICOM-SEG, meshes, statistics or a 3D preview."""
    from pedseg.domains.registry import DomainRegistry
    from pedseg.outputs.export import export_segmentation
    from pedseg.outputs.options import parse_outputs

    spec = DomainRegistry().get(domain) if domain is not None else None
    chosen = parse_outputs(
        formats,
        mesh_format=mesh_format,
        smoothing=mesh_smoothing,
        decimate=mesh_decimate,
        spec=spec,
        option="--format",
    )
    result = export_segmentation(
        labels,
        like,
        formats=chosen,
        spec=spec,
        out=out,
        overwrite=overwrite,
        model_sha256=model_sha256,
    )
    for kind, path in result.files.items():
        console.print(f"  {kind}: {escape(str(path))}", soft_wrap=True)
    seconds = sum(result.timings.values())
    ok(f"wrote {len(result.files)} file(s) ({', '.join(chosen.formats)}) in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("export-seg")(export_seg)
