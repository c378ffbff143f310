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

import numpy as np
import torch
from torch import Tensor, nn

from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError
from pedseg.models.build import build_model
from pedseg.models.segmenter import DomainSegmenter
from pedseg.models.unet import MultiDomainUNet
from pedseg.runfolder.card import ModelCard
from pedseg.runfolder.index import DomainEntry, RunIndex, index_run
from pedseg.runfolder.integrity import verify_sha256
from pedseg.runfolder.layout import RunLayout

__all__ = ["DomainModel", "LoadedRun", "load_network", "load_run", "numpy_embedder"]


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
    """A loaded run folder: its card, its :class:`~pedseg.runfolder.index.RunIndex` and one
    :class:`DomainModel` per domain."""

    index: RunIndex
    models: Mapping[str, DomainModel] = field(repr=False, compare=False)

    @property
    def layout(self) -> RunLayout:
        return self.index.layout

    @property
    def card(self) -> ModelCard:
        return self.index.card

    @property
    def path(self) -> Path:
        return self.index.path

    @property
    def domains(self) -> tuple[str, ...]:
        return self.index.domains

    def domain(self, name: str) -> DomainModel:
        """The segmenter of domain ``name``; other names raise :class:`UnknownNameError`."""
        self.index.entry(name)  # the one place that names an unknown domain
        return self.models[name]

    def network(self) -> MultiDomainUNet:
        """The network shared by the domains' segmenters (a card of kind ``model``)."""
        module = self.domain(self.domains[0]).module
        net = module.net if isinstance(module, DomainSegmenter) else None
        if self.card.kind != "model" or not isinstance(net, MultiDomainUNet):
            raise ModelError(f"{self.path}: holds no single multi-domain network")
        return net


def load_run(path: Path | RunLayout | RunIndex | None) -> LoadedRun:
    """Load the run folder ``path`` (default: the most recent run; an index already read is
    not read again); see the module docstring."""
    index = path if isinstance(path, RunIndex) else index_run(path)
    networks: dict[Path, MultiDomainUNet] = {}  # one network per folder (a baseline: per member)
    models: dict[str, DomainModel] = {}
    for name in index.domains:
        entry = index.entry(name)
        root = entry.layout.root
        if root not in networks:
            networks[root] = load_network(entry.layout, entry.card)
        models[name] = _domain_model(entry, networks[root])
    return LoadedRun(index=index, models=models)


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


def _domain_model(entry: DomainEntry, net: MultiDomainUNet) -> DomainModel:
    mapping = entry.card.label_mapping[entry.spec.name]
    classes = tuple(mapping.classes[label] for label in entry.spec.label_ids)
    identity = classes == tuple(range(1, net.num_classes[mapping.head]))
    module = DomainSegmenter(net, head=mapping.head, classes=None if identity else classes).eval()
    return DomainModel(
        spec=entry.spec,
        image_size=entry.image_size,
        module=module,
        model_sha256=entry.model_sha256,
        scheme=entry.scheme,
        embed=_embedder(net, mapping.head),
        arch=entry.arch,
        layout=entry.layout,
        components=entry.components,
        label_chain=entry.label_chain,
    )


def _embedder(net: MultiDomainUNet, head: int) -> Callable[[Tensor], Tensor]:
    def embed(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net.embed(x, head)

    return embed


def numpy_embedder(model: DomainModel) -> Callable[[np.ndarray], np.ndarray]:
    """``model``'s embedding as numpy in, numpy out: slices (N, 1, H, W) float32 are moved to the
    device of the module's parameters (wherever it is when called), embeddings (N, D) float32
    come back on the CPU. :class:`ModelError` for a model without an embedding."""
    embed = model.embed
    if embed is None:
        raise ModelError(f"domain {model.spec.name!r} has no embedding")

    def run(images: np.ndarray) -> np.ndarray:
        device = next(model.module.parameters()).device
        block = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(device)
        with torch.inference_mode():
            return embed(block).float().cpu().numpy()

    return run
