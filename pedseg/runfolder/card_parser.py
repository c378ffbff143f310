"""Strict reading of a model card (``model.json``): field by field, one-line errors naming the
card file and the field (see :mod:`pedseg.runfolder.card` for the format)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pedseg import __version__
from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.errors import ConfigError, DescriptorError, ModelError, PlanError
from pedseg.models.config import ModelConfig
from pedseg.models.mapping import LabelMapping
from pedseg.runfolder.card import (
    CARD_FIELDS,
    CARD_FORMAT,
    KINDS,
    MODEL_FIELDS,
    READABLE_FORMATS,
    ComponentLimits,
    ModelCard,
)
from pedseg.runfolder.layout import RunLayout

__all__ = ["CardParser"]


class CardParser:
    """Field-by-field validation with one-line errors naming the card file and the field."""

    def __init__(self, where: Path | str) -> None:
        self.where = where

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.where}: {message}")

    def card(self, raw: Any) -> ModelCard:
        if not isinstance(raw, dict):
            raise self.fail(f"must hold a JSON object, got {type(raw).__name__}")
        self.check_format(raw)
        unknown = sorted(set(raw) - CARD_FIELDS)
        if unknown:
            raise self.fail(
                f"unknown field {unknown[0]!r}; the file was not written by pedseg, or edited"
            )
        kind = raw.get("kind")
        if kind not in KINDS:
            raise self.fail(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        domains = self.names(raw, "domains")
        common: dict[str, Any] = {
            "scheme": self.typed(raw, "scheme", str),
            "domains": domains,
            "training": self.typed(raw, "training", dict),
            "descriptor_hashes": self.hashes(raw, domains),
            "pedseg_version": str(raw.get("pedseg_version", "unknown")),
        }
        if kind == "baseline":
            return ModelCard(kind="baseline", members=self.members(raw, domains), **common)
        return self.model_card(raw, domains, common)

    def check_format(self, raw: Mapping[str, Any]) -> None:
        version = raw.get("format")
        if isinstance(version, int) and not isinstance(version, bool):
            if version in READABLE_FORMATS:
                return
            if version > CARD_FORMAT:
                raise self.fail(
                    f"unknown model format {version}: written by pedseg "
                    f"{raw.get('pedseg_version', 'unknown')}, newer than this one ({__version__}, "
                    f"reads formats {READABLE_FORMATS[0]}-{CARD_FORMAT}); upgrade pedseg to load it"
                )
        raise self.fail(
            f"unknown model format {version!r} (this pedseg reads formats "
            f"{READABLE_FORMATS[0]}-{CARD_FORMAT}); load it with the pedseg version that wrote it "
            f"({raw.get('pedseg_version', 'unknown')})"
        )

    def model_card(
        self, raw: Mapping[str, Any], domains: tuple[str, ...], common: dict[str, Any]
    ) -> ModelCard:
        for key in MODEL_FIELDS:
            if key not in raw:
                raise self.fail(f"field {key!r} is missing; the file is damaged: retrain")
        try:
            model = ModelConfig.from_dict(self.typed(raw, "model", dict))
        except ConfigError as exc:
            raise self.fail(f"field 'model' is invalid: {exc}") from None
        num_classes = self.int_list(raw, "num_classes")
        size = self.int_list(raw, "image_size")
        if len(size) != 2:
            raise self.fail(f"image_size must be [H, W], got {raw['image_size']!r}")
        descriptors = {name: self.spec(raw, name, common["descriptor_hashes"]) for name in domains}
        mappings = {name: self.mapping(raw, descriptors[name], num_classes) for name in domains}
        best = self.metric(raw, "best_metric")
        best_epoch = self.int_value(raw, "best_epoch", default=0)
        if "weights_epoch" in raw:
            weights_epoch = self.int_value(raw, "weights_epoch", default=0)
            weights = self.metric(raw, "weights_metric")
        else:  # format 1-2: the weights were the best epoch's
            weights_epoch, weights = best_epoch, best
        return ModelCard(
            kind="model",
            model=model,
            num_classes=num_classes,
            image_size=(size[0], size[1]),
            descriptors=descriptors,
            label_mapping=mappings,
            best_epoch=best_epoch,
            best_metric=best,
            weights_epoch=weights_epoch,
            weights_metric=weights,
            model_sha256=self.sha(raw.get("model_sha256"), "model_sha256"),
            artifacts={
                str(k): self.sha(v, f"artifacts.{k}")
                for k, v in self.typed(raw, "artifacts", dict, default={}).items()
            },
            extended_from=self.typed(raw, "extended_from", dict, default=None),
            adapted=self.typed(raw, "adapted", dict, default=None),
            postprocess=self.postprocess(raw, descriptors),
            label_chains=self.label_chains(raw, descriptors),
            **common,
        )

    # -- single fields
    def metric(self, raw: Mapping[str, Any], key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f"{key} must be a finite number or null, got {value!r}")
        return float(value)

    def typed(self, raw: Mapping[str, Any], key: str, kind: type, *, default: Any = ...) -> Any:
        if key not in raw and default is not ...:
            return default
        value = raw.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise self.fail(
                f"field {key!r} is missing or invalid ({value!r}); the file is damaged: "
                "retrain or restore it"
            )
        return value

    def int_value(self, raw: Mapping[str, Any], key: str, *, default: int) -> int:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{key} must be a non-negative integer, got {value!r}")
        return value

    def int_list(self, raw: Mapping[str, Any], key: str) -> tuple[int, ...]:
        values = self.typed(raw, key, list)
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise self.fail(f"{key} must be a list of positive integers, got {values!r}")
        return tuple(values)

    def names(self, raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
        names = self.typed(raw, key, list)
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise self.fail(f"field {key!r} must list distinct domain names")
        return tuple(names)

    def sha(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or len(value) != 64:
            raise self.fail(f"{key} must be a hex SHA-256, got {value!r}")
        return value

    def hashes(self, raw: Mapping[str, Any], domains: Sequence[str]) -> dict[str, str]:
        hashes = self.typed(raw, "descriptor_hashes", dict)
        missing = [name for name in domains if name not in hashes]
        if missing:
            raise self.fail(f"descriptor_hashes has no entry for domain {missing[0]!r}")
        return {name: self.sha(hashes[name], f"descriptor_hashes.{name}") for name in domains}

    def members(self, raw: Mapping[str, Any], domains: Sequence[str]) -> dict[str, str]:
        members = self.typed(raw, "members", dict)
        out: dict[str, str] = {}
        for name in domains:
            relative = members.get(name)
            if not isinstance(relative, str) or RunLayout(Path()).resolve_member(relative) is None:
                raise self.fail(
                    f"members.{name} must be a relative folder inside the run, got {relative!r}"
                )
            out[name] = relative
        return out

    def spec(self, raw: Mapping[str, Any], name: str, hashes: Mapping[str, str]) -> DomainSpec:
        entry = self.typed(raw, "descriptors", dict).get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("labels"), dict):
            raise self.fail(f"descriptors.{name} is missing or invalid")
        try:
            entry = {**entry, "labels": {int(k): v for k, v in entry["labels"].items()}}
            spec = parse_descriptor(entry, source=f"{self.where}: descriptors.{name}")
        except (ValueError, DescriptorError) as exc:
            raise self.fail(f"descriptors.{name} is invalid: {exc}") from exc
        if spec.name != name:
            raise self.fail(f"descriptors.{name} names domain {spec.name!r}")
        if spec.content_hash() != hashes[name]:
            raise self.fail(
                f"descriptor of domain {name!r} does not match its recorded hash; the file was "
                "edited: restore it or retrain"
            )
        return spec

    def label_chains(
        self, raw: Mapping[str, Any], specs: Mapping[str, DomainSpec]
    ) -> dict[str, LabelChain]:
        out: dict[str, LabelChain] = {}
        for domain, chain in self.typed(raw, "label_chains", dict, default={}).items():
            spec = specs.get(domain)
            if spec is None:
                raise self.fail(f"label_chains.{domain}: not a domain of this model")
            try:
                out[domain] = LabelChain.from_dict(
                    chain, source=f"label_chains.{domain}", names=spec.label_names
                )
            except PlanError as exc:
                raise self.fail(str(exc)) from None
        return out

    def postprocess(
        self, raw: Mapping[str, Any], specs: Mapping[str, DomainSpec]
    ) -> dict[str, dict[str, ComponentLimits]]:
        out: dict[str, dict[str, ComponentLimits]] = {}
        for domain, labels in self.typed(raw, "postprocess", dict, default={}).items():
            spec = specs.get(domain)
            if spec is None or not isinstance(labels, dict):
                raise self.fail(f"postprocess.{domain}: not a domain of this model")
            out[domain] = {}
            for label, rule in labels.items():
                where = f"postprocess.{domain}.{label}"
                if label not in spec.label_names or not isinstance(rule, dict):
                    raise self.fail(f"{where}: not a label of domain {domain!r}")
                keep, volume = rule.get("keep_largest"), rule.get("min_volume_mm3")
                if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
                    raise self.fail(f"{where}.keep_largest must be an integer >= 0, got {keep!r}")
                if (
                    isinstance(volume, bool)
                    or not isinstance(volume, int | float)
                    or not math.isfinite(volume)
                    or volume < 0
                ):
                    raise self.fail(f"{where}.min_volume_mm3 must be a number >= 0, got {volume!r}")
                out[domain][label] = (keep, float(volume))
        return out

    def mapping(
        self, raw: Mapping[str, Any], spec: DomainSpec, num_classes: Sequence[int]
    ) -> LabelMapping:
        where = f"label_mapping.{spec.name}"
        try:
            mapping = LabelMapping.from_dict(
                spec.name, self.typed(raw, "label_mapping", dict).get(spec.name)
            )
        except ValueError as exc:
            raise self.fail(f"{where} {exc}; retrain") from None
        if not 0 <= mapping.head < len(num_classes):
            raise self.fail(f"{where}: head {mapping.head} is not in [0, {len(num_classes)})")
        if mapping.num_classes != num_classes[mapping.head] or set(mapping.classes) != set(
            spec.label_ids
        ):
            raise self.fail(f"{where} does not match the descriptor's labels or heads; retrain")
        return mapping
