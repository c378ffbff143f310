"""``pedseg identify SCAN… [--model RUN]``: which domain each scan looks like, and whether any."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from pedseg.cli.render import console


def identify(
    scans: list[Path] = typer.Argument(
        ..., metavar="SCAN", help="Volume files, folders of them, or DICOM series folders."
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Run folder (default: the most recent run)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the results to this JSON file."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
    device: str = typer.Option("cpu", "--device", help="auto | cpu | cuda | cuda:N."),
    ood_threshold: float | None = typer.Option(
        None,
        "--ood-threshold",
        help="Flag a scan whose median distance to its domain exceeds this many p95 units "
        "(default: pedseg's, see docs/recognition.md).",
    ),
) -> None:
    """Recognise each scan's domain from the model's embedding (exit 1 if a scan cannot be read).

    Per candidate domain the table shows the median distance of the scan's slices to that domain's
    training cluster, in units of the cluster's 95th percentile; OOD marks a scan whose closest
    domain is beyond the out-of-distribution threshold. A blank or near-constant scan is named
    with a warning (and its reasons are in the JSON under ``warnings``).
    """
    from pedseg.errors import PedsegError
    from pedseg.inference.batch import collect_cases
    from pedseg.inference.ood import OodCheck
    from pedseg.inference.recognition import recognizer_for
    from pedseg.io import read_volume
    from pedseg.io.atomic import atomic_path

    recognizer = recognizer_for(model, device=device, threshold=ood_threshold)
    ood = OodCheck(recognizer.profiles())
    cases = collect_cases(scans)
    if json_out is not None and json_out.exists() and not overwrite:
        from pedseg.errors import OutputExistsError

        raise OutputExistsError(json_out)
    rows: list[dict[str, Any]] = []
    for case in cases:
        entry: dict[str, Any] = {"scan": case.name, "input": str(case.source)}
        try:
            volume = read_volume(case.source)
            recognition = recognizer.identify(volume)
            entry.update(recognition.to_dict())
            spec = next(c.spec for c in recognizer.candidates if c.spec.name == recognition.domain)
            verdict = ood.assess(volume, spec, recognition=entry)
            entry["ood"] = verdict.flagged
            entry["embedding_ood"] = recognition.ood
            entry["evidence"] = verdict.to_dict()
            entry["warnings"] = [
                *volume.warnings,
                *([verdict.warning()] if verdict.flagged else []),
            ]
        except PedsegError as exc:
            entry["error"] = str(exc)
        rows.append(entry)
    console.print(_table(rows, recognizer.domains))
    for row in rows:
        for reason in row.get("warnings", ()):
            line = f"[yellow]warning: {escape(row['scan'])}: {escape(reason)}[/]"
            console.print(line, soft_wrap=True)
        if "error" in row:
            typer.secho(f"error: {row['scan']}: {row['error']}", fg="red", err=True)
    if json_out is not None:
        payload = {"threshold": recognizer.threshold, "domains": list(recognizer.domains)}
        with atomic_path(json_out, overwrite=overwrite) as tmp:
            text = json.dumps({**payload, "scans": rows}, indent=2) + "\n"
            tmp.write_text(text, encoding="utf-8")
        console.print(f"wrote {escape(str(json_out))}", soft_wrap=True)
    if any("error" in row for row in rows):
        raise typer.Exit(1)


def _table(rows: list[dict[str, Any]], domains: tuple[str, ...]) -> Table:
    table = Table(
        title="Domain recognition (distance: median, in units of the domain's p95)",
        caption="The domain is the one that claims most slices (each slice is nearer that "
        "domain's centroid than the other domains' scans seen through its batch norm); the "
        "distances are measured in each domain's own embedding space, so the smallest one need "
        "not be the chosen domain's. OOD: any out-of-distribution check failed (see warnings).",
    )
    for column in ("scan", "domain", "confidence", *domains, "OOD"):
        table.add_column(column, justify="left" if column in ("scan", "domain") else "right")
    for row in rows:
        if "error" in row:
            table.add_row(escape(row["scan"]), "[red]error[/]", *([""] * (len(domains) + 2)))
            continue
        distances = row["median_distance"]
        cells = [f"{distances[name]:.2f}" for name in domains]
        ood = "[yellow]yes[/]" if row["ood"] else "no"
        table.add_row(escape(row["scan"]), row["domain"], f"{row['confidence']:.0%}", *cells, ood)
    return table


def register(app: typer.Typer) -> None:
    app.command("identify")(identify)
