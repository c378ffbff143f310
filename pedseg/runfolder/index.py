"""What a run folder holds per domain, read from its card(s) alone: no weights, no torch.

:func:`index_run` reads a run's card (and, for a ``baseline`` card, each member's) and checks them
as :func:`~pedseg.runfolder.loading.load_run` does, without reading the weights. Predicting with an
up-to-date ONNX export needs nothing more (the export carries the weights' SHA-256 the card
records, the domain profiles are checked against the same hash), so that path imports no torch;
:func:`~pedseg.runfolder.loading.load_run` builds the networks on top of an index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ModelError, UnknownNameError
from pedseg.runfolder.card import ModelCard, read_card
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.pointer import resolve_run

__all__ = ["DomainEntry", "RunIndex", "index_run"]


@dataclass(frozen=True)
class DomainEntry:
    """One domain of a run as its card describes it."""

    spec: DomainSpec
    image_size: tuple[int, int]
    model_sha256: str
    scheme: str
    arch: str
    layout: RunLayout
    """The run folder holding this domain's weights and profiles (a baseline member's own)."""
    card: ModelCard
    """That folder's card (kind ``model``)."""
    components: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Per label name ``(keep_largest, min_volume_mm3)`` decided from the training labels."""
    label_chain: LabelChain | None = None


@dataclass(frozen=True)
class RunIndex:
    """A run folder's card and one :class:`DomainEntry` per domain, in the card's order."""

    layout: RunLayout
    card: ModelCard
    entries: Mapping[str, DomainEntry] = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def domains(self) -> tuple[str, ...]:
        return self.card.domains

    def entry(self, name: str) -> DomainEntry:
        """Domain ``name``'s entry; other names raise :class:`UnknownNameError`."""
        if name not in self.entries:
            raise UnknownNameError("domain of this model", name, self.domains)
        return self.entries[name]


def index_run(path: Path | RunLayout | None) -> RunIndex:
    """The index of the run folder ``path`` (default: the most recent run)."""
    layout = path if isinstance(path, RunLayout) else resolve_run(path)
    card = read_card(layout)
    entries = model_entries(layout, card) if card.kind == "model" else _baseline(layout, card)
    return RunIndex(layout=layout, card=card, entries=entries)


def model_entries(layout: RunLayout, card: ModelCard) -> dict[str, DomainEntry]:
    """The entries of a card of kind ``model`` (one network for all its domains)."""
    if card.image_size is None or card.model is None:  # guaranteed by the card's validation
        raise ModelError(f"{layout.card}: incomplete card of kind 'model'")
    return {
        name: DomainEntry(
            spec=card.spec(name),
            image_size=card.image_size,
            model_sha256=card.model_sha256,
            scheme=card.scheme,
            arch=card.model.arch,
            layout=layout,
            card=card,
            components=dict(card.postprocess.get(name, {})),
            label_chain=card.label_chains.get(name),
        )
        for name in card.domains
    }


def _baseline(layout: RunLayout, card: ModelCard) -> dict[str, DomainEntry]:
    out: dict[str, DomainEntry] = {}
    for name in card.domains:
        member = layout.resolve_member(card.members[name])
        if member is None:  # refused when the card was read
            raise ModelError(f"{layout.card}: members.{name} leaves the run folder")
        member_card = read_card(resolve_run(member.root))
        if member_card.kind != "model":
            raise ModelError(f"{member.card}: a baseline member must be a model")
        entries = model_entries(member, member_card)
        if name not in entries:
            raise ModelError(f"{member.card}: holds no model of domain {name!r}")
        if entries[name].spec.content_hash() != card.descriptor_hashes.get(name):
            raise ModelError(
                f"{member.card}: descriptor of domain {name!r} does not match the hash in "
                f"{layout.card}; the run was mixed up: retrain"
            )
        out[name] = entries[name]
    return out
