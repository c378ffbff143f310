"""The model card (``RUN/model.json``): a typed, validated record of a trained run.

A card of kind ``model`` describes one network: its :class:`~pedseg.models.build.ModelConfig`, the
classes of each head, the in-plane size, the domains in model order with their full descriptors and
content hashes, each domain's label mapping, the training configuration (no case ids, no paths), the
best epoch and metric, the epoch the weights come from and its metric (the best epoch's, or the
last's when the run keeps its final weights), the SHA-256 of the weights and of every other
artifact written since (``artifacts``: domain profiles, ONNX exports), and where it came from
(``extended_from``, ``adapted``). A card of kind ``baseline`` lists one member run folder per domain (``members``).

Format history: 1 (pedseg 0.1 before the run-folder contract) had no ``artifacts``; it is read as
format 2 with no artifact hashes recorded. 2 had no ``weights_epoch`` / ``weights_metric``: its
weights were always the best epoch's, and it is read so. Cards of a newer format are refused with
the version that wrote them. Unknown fields are refused: a card is never half-understood.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pedseg import __version__
from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ModelError
from pedseg.io.atomic import write_text_atomic
from pedseg.models.config import ModelConfig
from pedseg.models.mapping import LabelMapping
from pedseg.runfolder.layout import RunLayout

__all__ = ["CARD_FORMAT", "CardKind", "ModelCard", "read_card", "write_card"]

CARD_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
CardKind = Literal["model", "baseline"]
ComponentLimits = tuple[int, float]
KINDS: tuple[str, ...] = ("model", "baseline")
CARD_FIELDS = {
    "format",
    "kind",
    "pedseg_version",
    "scheme",
    "domains",
    "descriptor_hashes",
    "training",
    "model",
    "num_classes",
    "image_size",
    "descriptors",
    "label_mapping",
    "best_epoch",
    "best_metric",
    "weights_epoch",
    "weights_metric",
    "model_sha256",
    "artifacts",
    "extended_from",
    "adapted",
    "members",
    "postprocess",
    "label_chains",
}
MODEL_FIELDS = ("model", "num_classes", "image_size", "descriptors", "label_mapping")


@dataclass(frozen=True)
class ModelCard:
    """``model.json`` as typed data (see the module docstring); build it, then :func:`write_card`."""

    kind: CardKind
    scheme: str
    domains: tuple[str, ...]
    training: Mapping[str, Any]
    descriptors: Mapping[str, DomainSpec] = field(default_factory=dict)
    descriptor_hashes: Mapping[str, str] = field(default_factory=dict)
    model: ModelConfig | None = None
    num_classes: tuple[int, ...] = ()
    image_size: tuple[int, int] | None = None
    label_mapping: Mapping[str, LabelMapping] = field(default_factory=dict)
    best_epoch: int = 0
    best_metric: float | None = None
    weights_epoch: int = 0
    """The epoch the weights come from (``best_epoch`` unless the run kept its final weights)."""
    weights_metric: float | None = None
    """Their mean validation Dice."""
    model_sha256: str = ""
    artifacts: Mapping[str, str] = field(default_factory=dict)
    extended_from: Mapping[str, Any] | None = None
    adapted: Mapping[str, Any] | None = None
    members: Mapping[str, str] = field(default_factory=dict)
    pedseg_version: str = __version__
    postprocess: Mapping[str, Mapping[str, ComponentLimits]] = field(default_factory=dict)
    """Per domain and label name: ``(keep_largest, min_volume_mm3)`` decided from the training
    labels (:func:`pedseg.data.postprocess_rules.choose_postprocess`); applied after prediction."""
    label_chains: Mapping[str, LabelChain] = field(default_factory=dict)
    """Per domain whose training labels form a chain (vertebrae, :mod:`pedseg.data.label_chain`):
    the chain, whose members prediction renumbers by their order."""

    @classmethod
    def for_model(
        cls,
        *,
        scheme: str,
        specs: Sequence[DomainSpec],
        model: ModelConfig,
        mappings: Sequence[LabelMapping],
        image_size: tuple[int, int],
        training: Mapping[str, Any],
        best_epoch: int = 0,
        best_metric: float | None = None,
        weights_epoch: int | None = None,
        weights_metric: float | None = None,
        postprocess: Mapping[str, Mapping[str, ComponentLimits]] | None = None,
        label_chains: Mapping[str, LabelChain] | None = None,
    ) -> ModelCard:
        """The card of one network over ``specs`` (weights hash added by the writer)."""
        heads: list[int] = []
        for mapping in mappings:
            if mapping.head == len(heads):
                heads.append(mapping.num_classes)
        return cls(
            kind="model",
            scheme=scheme,
            domains=tuple(spec.name for spec in specs),
            training=dict(training),
            descriptors={spec.name: spec for spec in specs},
            descriptor_hashes={spec.name: spec.content_hash() for spec in specs},
            model=model,
            num_classes=tuple(heads),
            image_size=(int(image_size[0]), int(image_size[1])),
            label_mapping={m.domain: m for m in mappings},
            best_epoch=best_epoch,
            best_metric=best_metric,
            weights_epoch=best_epoch if weights_epoch is None else weights_epoch,
            weights_metric=best_metric if weights_epoch is None else weights_metric,
            postprocess={k: dict(v) for k, v in (postprocess or {}).items()},
            label_chains=dict(label_chains or {}),
        )

    @classmethod
    def for_baseline(cls, *, specs: Sequence[DomainSpec], training: Mapping[str, Any]) -> ModelCard:
        """The top-level card of a baseline run: one member run folder per domain."""
        return cls(
            kind="baseline",
            scheme="baseline",
            domains=tuple(spec.name for spec in specs),
            training=dict(training),
            descriptor_hashes={spec.name: spec.content_hash() for spec in specs},
            members={spec.name: RunLayout.member_name(spec.name) for spec in specs},
        )

    # ------------------------------------------------------------------------------ queries
    def spec(self, name: str) -> DomainSpec:
        """The descriptor of domain ``name`` (kind ``model``)."""
        return self.descriptors[name]

    def with_domain(
        self,
        spec: DomainSpec,
        mapping: LabelMapping,
        postprocess: Mapping[str, ComponentLimits] | None = None,
        label_chain: LabelChain | None = None,
    ) -> ModelCard:
        """This card with ``spec`` appended (a new head of ``mapping.num_classes`` classes)."""
        rules = dict(self.postprocess)
        if postprocess:
            rules[spec.name] = dict(postprocess)
        chains = dict(self.label_chains)
        if label_chain is not None:
            chains[spec.name] = label_chain
        return replace(
            self,
            postprocess=rules,
            label_chains=chains,
            domains=(*self.domains, spec.name),
            descriptors={**self.descriptors, spec.name: spec},
            descriptor_hashes={**self.descriptor_hashes, spec.name: spec.content_hash()},
            num_classes=(*self.num_classes, mapping.num_classes),
            label_mapping={**self.label_mapping, spec.name: mapping},
        )

    def with_artifact(self, relative: str, sha256: str | None) -> ModelCard:
        """This card recording (or, with ``None``, forgetting) an artifact's SHA-256."""
        artifacts = {k: v for k, v in self.artifacts.items() if k != relative}
        if sha256 is not None:
            artifacts[relative] = sha256
        return replace(self, artifacts=dict(sorted(artifacts.items())))

    # ------------------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """Plain JSON types in the order a reader expects them."""
        out: dict[str, Any] = {
            "format": CARD_FORMAT,
            "kind": self.kind,
            "pedseg_version": self.pedseg_version,
            "scheme": self.scheme,
            "domains": list(self.domains),
            "descriptor_hashes": dict(self.descriptor_hashes),
            "training": dict(self.training),
        }
        if self.kind == "baseline":
            out["members"] = dict(self.members)
            return out
        if self.model is None or self.image_size is None:
            raise ModelError("a card of kind 'model' needs its model config and image size")
        out.update(
            model=self.model.to_dict(),
            num_classes=list(self.num_classes),
            image_size=list(self.image_size),
            descriptors={n: self.descriptors[n].to_dict(include_data=False) for n in self.domains},
            label_mapping={n: self.label_mapping[n].to_dict() for n in self.domains},
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            weights_epoch=self.weights_epoch,
            weights_metric=self.weights_metric,
            model_sha256=self.model_sha256,
            artifacts=dict(self.artifacts),
        )
        if self.postprocess:
            out["postprocess"] = {
                domain: {
                    label: {"keep_largest": keep, "min_volume_mm3": volume}
                    for label, (keep, volume) in labels.items()
                }
                for domain, labels in self.postprocess.items()
            }
        if self.label_chains:
            out["label_chains"] = {d: c.to_dict() for d, c in self.label_chains.items()}
        if self.extended_from is not None:
            out["extended_from"] = dict(self.extended_from)
        if self.adapted is not None:
            out["adapted"] = dict(self.adapted)
        return out

    @classmethod
    def from_json(cls, raw: Any, *, where: Path | str) -> ModelCard:
        """Validate a parsed ``model.json``; :class:`ModelError` naming ``where`` and the field."""
        from pedseg.runfolder.card_parser import CardParser  # the parser builds ModelCards

        return CardParser(where).card(raw)


def read_card(layout: RunLayout | Path) -> ModelCard:
    """The card of a run folder; :class:`ModelError` when missing, unreadable or invalid."""
    layout = layout if isinstance(layout, RunLayout) else RunLayout(layout)
    where = layout.card
    try:
        raw = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"{layout.root}: not a run folder (no {where.name}); pass a folder written by "
            "`pedseg train`"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{where}: unreadable ({exc}); retrain or restore the file") from exc
    return ModelCard.from_json(raw, where=where)


def write_card(layout: RunLayout | Path, card: ModelCard) -> None:
    """Write ``model.json`` atomically."""
    layout = layout if isinstance(layout, RunLayout) else RunLayout(layout)
    write_text_atomic(layout.card, json.dumps(card.to_json(), indent=2) + "\n")
