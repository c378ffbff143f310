"""Checks on a trained run before it is extended with a domain or adapted to a new site.

Both ``pedseg add-domain --to-model`` (:mod:`pedseg.training.extend`) and ``pedseg adapt-bn``
(:mod:`pedseg.training.adapt`) change one domain's batch norms of a DSBN model and write a new run;
these helpers read the base run's card, refuse runs without per-domain batch norms (joint,
baseline) and existing output folders, and reach the shared network of a loaded run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pedseg.errors import ConfigError, OutputExistsError
from pedseg.runfolder.card import ModelCard, read_card
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.pointer import resolve_run

__all__ = [
    "DSBN_SCHEMES",
    "FIXED_BY_BASE",
    "check_dsbn",
    "check_extendable",
    "check_extension_request",
    "check_new_output",
    "extendable_base",
    "read_base",
]

DSBN_SCHEMES: tuple[str, ...] = ("dsl", "dsl-contrastive")


def read_base(path: Path | None) -> tuple[RunLayout, ModelCard]:
    """The layout and card of ``path`` (default: the last run), without the weights."""
    layout = resolve_run(path)
    return layout, read_card(layout)


def check_dsbn(card: ModelCard, root: Path, *, action: str) -> None:
    """Refuse runs whose domains do not each have their own batch norms (joint, baseline)."""
    scheme = card.scheme
    if card.kind == "baseline" or scheme == "baseline":
        raise ConfigError(
            f"{root}: cannot {action} a baseline run: it holds one separate model per domain "
            f"(RUN/baseline/<domain>); pass one of those member folders, or train a DSBN model "
            f"(--scheme dsl-contrastive)"
        )
    if scheme == "joint":
        raise ConfigError(
            f"{root}: cannot {action} a joint-scheme model: its one batch norm and one head are "
            "shared by every domain, so changing them would change the other domains' outputs; "
            "train a DSBN model (--scheme dsl or dsl-contrastive)"
        )
    if scheme not in DSBN_SCHEMES or card.model is None or card.model.norm != "dsbn":
        raise ConfigError(
            f"{root}: cannot {action} scheme {scheme!r}; only {', '.join(DSBN_SCHEMES)} "
            "models (one batch norm per domain) are supported"
        )


def check_extendable(card: ModelCard, root: Path, domain: str) -> None:
    """Raise :class:`ConfigError` unless ``domain`` can be added to the run ``root``."""
    check_dsbn(card, root, action="add a domain to")
    if domain in card.domains:
        raise ConfigError(
            f"{root}: domain {domain!r} is already in this model ({', '.join(card.domains)}); to "
            f"adapt it to new scans use `pedseg adapt-bn --domain {domain}`"
        )


def check_new_output(out: Path) -> None:
    """Refuse an existing output folder unless it is empty (runs are never overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out, "choose another --out or remove that folder")


FIXED_BY_BASE: tuple[str, ...] = (
    "--scheme",
    "--arch",
    "--image-size",
    "--base-width",
    "--depth",
    "--tau",
    "--lambda",
    "--amp",
    "--resume",
    "--compile",
)
"""Training options a base run fixes: refused together with ``train --from``."""


def check_extension_request(
    base: Path | None,
    names: Sequence[str],
    *,
    freeze_shared: bool,
    given: Sequence[str] = (),
) -> RunLayout:
    """The base run of ``train --domains NEW --from RUN --freeze-shared``, after the request's
    rules: ``--from`` and ``--freeze-shared`` together, one new domain, none of the options the
    base fixes (``given``: the flags given on the command line); the base must be extendable."""
    if base is None:
        raise ConfigError("--freeze-shared needs --from RUN (the trained model to extend)")
    if not freeze_shared:
        raise ConfigError(
            "--from RUN without --freeze-shared would fine-tune the whole model, which is not "
            "supported yet; pass --freeze-shared to train only the new domain's batch norm and head"
        )
    fixed = [flag for flag in given if flag in FIXED_BY_BASE]
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot be used with --from: the base run fixes the scheme, "
            "architecture and image size, and only the new domain's segmentation loss is trained "
            "(fp32); drop the option(s)"
        )
    if len(names) != 1:
        raise ConfigError(
            f"--from adds one new domain at a time; name exactly one with --domains, got "
            f"{', '.join(names) or 'none'}"
        )
    return extendable_base(base, names[0])


def extendable_base(model: Path | None, domain: str) -> RunLayout:
    """The run ``model`` (default: the last run), refused unless ``domain`` can be added to it
    (checked before anything is registered or cached)."""
    layout, card = read_base(model)
    check_extendable(card, layout.root, domain)
    return layout
