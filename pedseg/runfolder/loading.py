"""Loading a trained run folder: one ready-to-run segmenter per domain.

A run folder holds a card of kind ``model`` with ``model.safetensors``, or a ``baseline`` card whose
members are complete single-domain runs under ``RUN/baseline/<domain>/``. Weights are read with
safetensors only (nothing is ever unpickled), their SHA-256 must match the card, and every stored
descriptor must match its recorded hash (checked when the card is read).

Each domain becomes a :class:`DomainModel` whose ``module`` (a
:class:`~pedseg.models.segmenter.DomainSegmenter`) maps normalised slices ``(N, 1, H, W)`` to softmax
probabilities ``(N, C, H, W)`` over *that domain's* classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError, UnknownNameError
from pedseg.models.build import build_model
from pedseg.models.segmenter import DomainSegmenter
from pedseg.models.unet import MultiDomainUNet
from pedseg.runfolder.card import ModelCard, read_card
from pedseg.runfolder.integrity import verify_sha256
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.pointer import resolve_run

__all__ = ["DomainModel", "LoadedRun", "load_network", "load_run"]


@dataclass(frozen=True)
class DomainModel:
    """Everything needed to segment one domain (see the module docstring)."""

    spec: DomainSpec
    image_size: tuple[int, int]
    module: nn.Module
    model_sha256: str
    scheme: str
    embed: Callable[[Tensor], Tensor] | None
    arch: str = "unet"
    layout: RunLayout | None = None
    """The run folder holding this domain's weights (a baseline member's own folder)."""
    components: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Per label name ``(keep_largest, min_volume_mm3)``: the post-processing the training labels
    decided (empty for runs trained before pedseg recorded it)."""
    label_chain: LabelChain | None = None
    """The serial labels (vertebrae) the training labels showed, renumbered after prediction."""


@dataclass(frozen=True)
class LoadedRun:
    """A loaded run folder: its card and one :class:`DomainModel` per domain."""

    layout: RunLayout
    card: ModelCard
    models: Mapping[str, DomainModel] = field(repr=False, compare=False)

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def domains(self) -> tuple[str, ...]:
        return self.card.domains

    def domain(self, name: str) -> DomainModel:
        """The segmenter of domain ``name``; other names raise :class:`UnknownNameError`."""
        if name not in self.models:
            raise UnknownNameError("domain of this model", name, self.domains)
        return self.models[name]

    def network(self) -> MultiDomainUNet:
        """The network shared by the domains' segmenters (a card of kind ``model``)."""
        module = self.domain(self.domains[0]).module
        net = module.net if isinstance(module, DomainSegmenter) else None
        if self.card.kind != "model" or not isinstance(net, MultiDomainUNet):
            raise ModelError(f"{self.path}: holds no single multi-domain network")
        return net


def load_run(path: Path | RunLayout | None) -> LoadedRun:
    """Load the run folder ``path`` (default: the most recent run); see the module docstring."""
    layout = path if isinstance(path, RunLayout) else resolve_run(path)
    card = read_card(layout)
    models = _load_model(layout, card) if card.kind == "model" else _load_baseline(layout, card)
    return LoadedRun(layout=layout, card=card, models=models)


def load_network(layout: RunLayout, card: ModelCard) -> MultiDomainUNet:
    """The verified network of a card of kind ``model`` (eval mode, no gradients)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = layout.weights
    if not weights.is_file():
        raise ModelError(f"{weights}: missing; the run did not finish an epoch: retrain")
    verify_sha256(
        weights,
        card.model_sha256,
        recorded_in=layout.card,
        fix="the weights were modified or belong to another run: restore them or retrain",
    )
    if card.model is None:
        raise ModelError(f"{layout.card}: holds no model configuration")
    try:
        net = build_model(card.model, num_classes=list(card.num_classes))
        net.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except (ConfigError, SafetensorError, RuntimeError, OSError, TypeError) as exc:
        raise ModelError(
            f"{weights}: cannot be loaded into the model of {layout.card.name}: {exc}"
        ) from exc
    net = net.float().eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def _load_model(layout: RunLayout, card: ModelCard) -> dict[str, DomainModel]:
    net = load_network(layout, card)
    if card.image_size is None or card.model is None:  # guaranteed by the card's validation
        raise ModelError(f"{layout.card}: incomplete card of kind 'model'")
    out: dict[str, DomainModel] = {}
    for name in card.domains:
        mapping = card.label_mapping[name]
        spec = card.spec(name)
        classes = tuple(mapping.classes[label] for label in spec.label_ids)
        identity = classes == tuple(range(1, net.num_classes[mapping.head]))
        module = DomainSegmenter(
            net, head=mapping.head, classes=None if identity else classes
        ).eval()
        out[name] = DomainModel(
            spec=spec,
            image_size=card.image_size,
            module=module,
            model_sha256=card.model_sha256,
            scheme=card.scheme,
            embed=_embedder(net, mapping.head),
            arch=card.model.arch,
            layout=layout,
            components=dict(card.postprocess.get(name, {})),
            label_chain=card.label_chains.get(name),
        )
    return out


def _embedder(net: MultiDomainUNet, head: int) -> Callable[[Tensor], Tensor]:
    def embed(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net.embed(x, head)

    return embed


def _load_baseline(layout: RunLayout, card: ModelCard) -> dict[str, DomainModel]:
    out: dict[str, DomainModel] = {}
    for name in card.domains:
        member = layout.resolve_member(card.members[name])
        if member is None:  # refused when the card was read
            raise ModelError(f"{layout.card}: members.{name} leaves the run folder")
        member_card = read_card(resolve_run(member.root))
        if member_card.kind != "model":
            raise ModelError(f"{member.card}: a baseline member must be a model")
        loaded = _load_model(member, member_card)
        if name not in loaded:
            raise ModelError(f"{member.card}: holds no model of domain {name!r}")
        if loaded[name].spec.content_hash() != card.descriptor_hashes.get(name):
            raise ModelError(
                f"{member.card}: descriptor of domain {name!r} does not match the hash in "
                f"{layout.card}; the run was mixed up: retrain"
            )
        out[name] = loaded[name]
    return out
