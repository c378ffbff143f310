"""Checks on a trained run before it is extended with a domain or adapted to a new site.

Both ``pedseg add-domain --to-model`` (:mod:`pedseg.training.extend`) and ``pedseg adapt-bn``
(:mod:`pedseg.training.adapt`) change one domain's batch norms of a DSBN model and write a new run;
these helpers read the base run's card, refuse runs without per-domain batch norms (joint,
baseline) and existing output folders, and reach the shared network of a loaded run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pedseg.errors import ConfigError, ModelError, OutputExistsError
from pedseg.inference.runs import MODEL_JSON, DomainSegmenter, LoadedRun, resolve_run
from pedseg.models.unet import MultiDomainUNet

__all__ = [
    "DSBN_SCHEMES",
    "base_network",
    "check_dsbn",
    "check_extendable",
    "check_new_output",
    "read_card",
]

DSBN_SCHEMES: tuple[str, ...] = ("dsl", "dsl-contrastive")


def read_card(path: Path | None) -> tuple[Path, dict[str, Any]]:
    """``(run folder, model.json)`` of ``path`` (default: the last run), without the weights."""
    root = resolve_run(path)
    try:
        card = json.loads((root / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{root / MODEL_JSON}: unreadable ({exc}); retrain or restore it") from exc
    if not isinstance(card, dict):
        raise ModelError(f"{root / MODEL_JSON}: must hold a JSON object")
    return root, card


def check_dsbn(card: Mapping[str, Any], root: Path, *, action: str) -> None:
    """Refuse runs whose domains do not each have their own batch norms (joint, baseline)."""
    scheme = card.get("scheme")
    if card.get("kind") == "baseline" or scheme == "baseline":
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
    model = card.get("model")
    if scheme not in DSBN_SCHEMES or not isinstance(model, dict) or model.get("norm") != "dsbn":
        raise ConfigError(
            f"{root}: cannot {action} scheme {scheme!r}; only {', '.join(DSBN_SCHEMES)} "
            "models (one batch norm per domain) are supported"
        )


def check_extendable(card: Mapping[str, Any], root: Path, domain: str) -> None:
    """Raise :class:`ConfigError` unless ``domain`` can be added to the run ``root``."""
    check_dsbn(card, root, action="add a domain to")
    domains = card.get("domains")
    if isinstance(domains, list) and domain in domains:
        raise ConfigError(
            f"{root}: domain {domain!r} is already in this model ({', '.join(domains)}); to "
            f"adapt it to new scans use `pedseg adapt-bn --domain {domain}`"
        )


def check_new_output(out: Path) -> None:
    """Refuse an existing output folder unless it is empty (runs are never overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(out, "choose another --out or remove that folder")


def base_network(run: LoadedRun) -> MultiDomainUNet:
    """The network shared by a loaded run's domain segmenters (a ``kind: model`` run)."""
    module = run.domain(run.domains[0]).module
    net = module.net if isinstance(module, DomainSegmenter) else None
    if not isinstance(net, MultiDomainUNet):
        raise ModelError(f"{run.path}: holds no multi-domain network to extend or adapt")
    return net
