"""``pedseg evaluate PRED REF --domain NAME``: the paper's metrics of predictions against references."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from pedseg.cli.render import console, ok

# (metric, row title, scale): overlap metrics in %, distances in mm
ROWS: tuple[tuple[str, str, float], ...] = (
    ("dice", "Dice %", 100.0),
    ("sensitivity", "Sensitivity %", 100.0),
    ("specificity", "Specificity %", 100.0),
    ("ravd", "RAVD %", 100.0),
    ("assd", "ASSD mm", 1.0),
    ("mssd", "MSSD mm", 1.0),
    ("hd95", "HD95 mm", 1.0),
)


def _cell(entry: Mapping[str, Any], scale: float) -> str:
    """``mean ± std`` scaled; % with one decimal, mm with two; "inf" (a hallucinated structure's
    RAVD) is shown as is."""
    digits = 1 if scale == 100.0 else 2
    parts = [
        value if isinstance(value, str) else f"{value * scale:.{digits}f}"
        for value in (entry["mean"], entry["std"])
    ]
    return f"{parts[0]} ± {parts[1]}"


def summary_table(summary: Mapping[str, Any], *, title: str) -> Table:
    """Mean ± std of each metric (rows) per label and overall (columns) of a ``summary.json``."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)
    groups = [(f"{k} {v['name']}", v["metrics"]) for k, v in summary["labels"].items()]
    groups.append(("overall", summary["overall"]["metrics"]))
    for name, _ in groups:
        table.add_column(name, justify="right")
    for key, heading, scale in ROWS:
        table.add_row(heading, *(_cell(metrics[key], scale) for _, metrics in groups))
    table.add_row("n", *(str(metrics["dice"]["n"]) for _, metrics in groups))
    return table


def evaluate(
    prediction: Path = typer.Argument(..., help="Prediction folder (or one label map file)."),
    reference: Path = typer.Argument(..., help="Reference folder (or one label map file)."),
    domain: str = typer.Option(..., "--domain", "-d", help="Domain of the label maps."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output folder (default: PRED/evaluation)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier results in --out."),
) -> None:
    """Dice, sensitivity, specificity, RAVD, ASSD, MSSD and HD95 per case and label.

    Files are matched by case name (suffix and nnU-Net _0000 stripped). A reference without a
    prediction counts as a missed case (empty prediction, worst-case distances); a prediction
    without a reference is ignored and listed.
    """
    from pedseg.domains.registry import DomainRegistry
    from pedseg.evaluation.evaluate import evaluate_folders, write_evaluation

    spec = DomainRegistry().get(domain)
    target = out if out is not None else _default_out(prediction)
    with console.status("evaluating") as status:

        def progress(case: str, done: int, total: int) -> None:
            status.update(f"evaluating {case} ({done}/{total})")

        evaluation = evaluate_folders(prediction, reference, spec=spec, progress=progress)
    paths = write_evaluation(evaluation, target, overwrite=overwrite)
    summary = evaluation.summary()
    console.print(summary_table(summary, title=f"{spec.name}: {summary['n_cases']} case(s)"))
    for case in evaluation.missing:
        typer.secho(
            f"warning: no prediction for case {case!r}: counted as missed (empty prediction)",
            fg=typer.colors.YELLOW,
            err=True,
        )
    for path in evaluation.ignored:
        typer.secho(
            f"warning: {path} has no reference label map: ignored", fg=typer.colors.YELLOW, err=True
        )
    ok(f"wrote {', '.join(p.name for p in paths)} to {target}")


def _default_out(prediction: Path) -> Path:
    base = prediction if prediction.is_dir() else prediction.parent
    return base / "evaluation"


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
