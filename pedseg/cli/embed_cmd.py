"""``pedseg embed``: t-SNE map of the bottleneck embeddings of training and validation slices."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pedseg.cli.options import DATA_HELP, DOMAINS_HELP, domain_names, model_option, out_option
from pedseg.cli.render import ok

if TYPE_CHECKING:
    from pedseg.domains.spec import DomainSpec
    from pedseg.runfolder.loading import LoadedRun


def embed(
    model: Path | None = model_option(),
    domains: list[str] = typer.Option([], "--domains", "-d", help=DOMAINS_HELP),
    more_domains: list[str] = typer.Argument(None, hidden=True, metavar="DOMAIN"),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
    out: Path = out_option(..., "PNG to write (and FILE.csv: the points)."),
    epochs_from: Path | None = typer.Option(
        None,
        "--epochs-from",
        help="Also draw one panel per saved checkpoint of this run (to FILE-epochs.png).",
    ),
    max_slices: int | None = typer.Option(
        None, "--max-slices", min=1, help="At most this many slices per domain (seeded subset)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the slice subset, PCA and t-SNE."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Slice cache folder (default: $PEDSEG_HOME/cache)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
) -> None:
    """Embed slices with the model (global max pooling of the bottleneck), PCA 50, t-SNE 2D."""
    from pedseg.errors import OutputExistsError
    from pedseg.evaluation.embedding import (
        EmbedOptions,
        collect_embeddings,
        coordinates_csv,
        snapshot_embeddings,
        tsne_panels,
    )
    from pedseg.evaluation.plots import tsne_figure
    from pedseg.io.atomic import write_text_atomic
    from pedseg.runfolder.loading import load_run

    if out.suffix.lower() != ".png":
        out = out.with_suffix(out.suffix + ".png") if out.suffix else out.with_suffix(".png")
    points = out.with_suffix(".csv")
    grid = out.with_name(f"{out.stem}-epochs.png")
    targets = [out, points, *([grid] if epochs_from is not None else [])]
    if not overwrite:
        for path in targets:
            if path.exists():
                raise OutputExistsError(path)
    run = load_run(model)
    names = domain_names(domains, more_domains) or list(run.domains)
    specs = _data_specs(run, names, data)
    options = EmbedOptions(max_slices=max_slices, seed=seed, cache_root=cache_dir)
    final = collect_embeddings(run, specs, domains=names, options=options)
    panel = tsne_panels([final], seed=seed)[0]
    tsne_figure([panel], out)
    write_text_atomic(points, coordinates_csv(final, panel.coords))
    written = [out, points]
    if epochs_from is not None:
        snapshots = snapshot_embeddings(epochs_from, specs, domains=names, options=options)
        tsne_figure(tsne_panels(snapshots, seed=seed), grid)
        written.append(grid)
    n_val = int(final.validation.sum())
    ok(
        f"embedded {final.vectors.shape[0]} slices ({n_val} validation) of {', '.join(names)} "
        f"into {final.vectors.shape[1]} dims; wrote {', '.join(str(p) for p in written)}"
    )


def _data_specs(run: LoadedRun, names: list[str], data: list[str]) -> dict[str, DomainSpec]:
    """Each domain's stored descriptor with its data folder (``--data`` or the registry's)."""
    from pedseg.domains.registry import DomainRegistry, data_option, parse_data_overrides
    from pedseg.errors import ConfigError, RegistryError

    for name in names:
        run.domain(name)  # UnknownNameError for a domain the model does not segment
    roots = parse_data_overrides(data)
    extra = sorted(set(roots) - set(names))
    if extra:
        raise ConfigError(f"--data names domain {extra[0]!r} which is not embedded")
    registry = DomainRegistry()
    specs: dict[str, DomainSpec] = {}
    for name in names:
        try:
            spec = registry.get(name)  # only its data location is used
        except RegistryError:
            spec = run.domain(name).spec
        if name in roots:
            spec = spec.with_data_root(roots[name], given_as=data_option(name, roots[name]))
        specs[name] = spec
    return specs


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
