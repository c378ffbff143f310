"""``pedseg plan --domains A B … --budget 1h``: choose a training configuration that fits the budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pedseg.cli.options import DATA_HELP, DOMAINS_HELP, domain_names, parse_image_size
from pedseg.cli.render import console, ok

if TYPE_CHECKING:
    from pedseg.planning.plan import Plan


def plan(
    domains: list[str] = typer.Option([], "--domains", "-d", help=DOMAINS_HELP),
    more_domains: list[str] = typer.Argument(None, hidden=True, metavar="DOMAIN"),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
    budget: str = typer.Option("1h", "--budget", help="Wall-clock budget: 1h, 45m, 90s, 1h30m."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    out: Path = typer.Option(Path("plan.json"), "--out", "-o", help="Where to write the plan."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing plan file."),
    image_size: str | None = typer.Option(None, "--image-size", help="Fix the image size (256)."),
    base_width: int | None = typer.Option(None, "--base-width", help="Fix the UNet width."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Fix the batch size."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Slice cache folder (default: $PEDSEG_HOME/cache)."
    ),
) -> None:
    """Plan a training run: image size, model, batch, steps and schedule that fit the budget.

    Fingerprints the datasets and times candidate models on the device (both cached), so the
    first use takes a while; prints the plan with one reason per choice and writes plan.json.
    """
    from pedseg.domains.registry import DomainRegistry, parse_data_overrides
    from pedseg.errors import OutputExistsError
    from pedseg.planning.api import plan_run
    from pedseg.planning.budget import parse_budget
    from pedseg.planning.plan import write_plan

    names = domain_names(domains, more_domains)
    seconds = parse_budget(budget)
    if out.exists() and not overwrite:
        raise OutputExistsError(out)
    fixed: dict[str, Any] = {}
    size = parse_image_size(image_size)
    if size is not None:
        fixed["image_size"] = size
    if base_width is not None:
        fixed["base_width"] = base_width
    if batch_size is not None:
        fixed["batch_size"] = batch_size
    specs = DomainRegistry().resolve(names, data=parse_data_overrides(data))
    with console.status("fingerprinting the data and timing candidate models…"):
        outcome = plan_run(
            specs, budget_s=seconds, device=device, cache_root=cache_dir, overrides=fixed
        )
    render_plan(outcome.plan)
    if outcome.measured:
        console.print(
            f"measured {len(outcome.measured)} step time(s), cached in {outcome.times_file}"
        )
    write_plan(outcome.plan, out, overwrite=overwrite)
    ok(f"wrote {out}; train with it: pedseg train --plan {out} --domains {' '.join(names)}")


def render_plan(plan: Plan) -> None:
    """The plan as a table (one reason per line) and the per-label post-processing."""
    from rich.table import Table

    from pedseg.planning.budget import format_duration

    values = {
        "image size": f"{plan.image_size}²",
        "model": f"{plan.arch}, width {plan.base_width}, depth {plan.depth}, "
        f"batch {plan.batch_size}",
        "precision": f"{'bf16' if plan.amp == 'bf16' else 'fp32'}"
        f"{', channels_last' if plan.channels_last else ''}",
        "steps": f"{plan.total_steps} x {plan.step_seconds:.3f} s",
        "epochs": f"{plan.epochs} x {plan.steps_per_epoch}",
        "schedule": f"{plan.schedule}, lr {plan.lr:g}, warm-up {plan.warmup_steps}",
        "loss": plan.seg_loss,
        "wall time": format_duration(plan.expected_seconds),
    }
    title = (
        f"plan for {', '.join(plan.domains)}: {format_duration(plan.budget_s)} on {plan.machine}"
    )
    table = Table(title=title, show_lines=False)
    for column in ("choice", "value", "reason"):
        table.add_column(column, overflow="fold")
    for choice, reason in plan.reasons:
        table.add_row(choice, values.get(choice, ""), reason)
    console.print(table)
    post = Table(title="post-processing per label (from the training labels)")
    for column in ("domain", "label", "keep largest", "min volume (mm³)", "reason"):
        post.add_column(column, overflow="fold")
    for entry in plan.postprocess:
        keep = str(entry.keep_largest) if entry.keep_largest else "all"
        post.add_row(entry.domain, entry.label, keep, f"{entry.min_volume_mm3:,.0f}", entry.reason)
    console.print(post)
    console.print(
        f"expected wall time {format_duration(plan.expected_seconds)} "
        f"(budget {format_duration(plan.budget_s)})"
    )


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
