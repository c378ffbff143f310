"""Loading a trained run folder: one ready-to-run segmenter per domain.

A run folder is written by :mod:`pedseg.training.artifacts`: ``model.json`` (``"kind": "model"``) with
``model.safetensors``, or a ``baseline`` run (``"kind": "baseline"``) whose members are complete
single-domain runs under ``RUN/baseline/<domain>/``. Weights are read with safetensors only (nothing
is ever unpickled), their SHA-256 must match ``model.json``, and every stored descriptor must match
its recorded hash.

Each domain becomes a :class:`DomainModel` whose ``module`` maps normalised slices ``(N, 1, H, W)`` to
softmax probabilities ``(N, C, H, W)`` over *that domain's* classes (channel ``j`` = its ``j``-th
label, 0 = background). For the ``joint`` scheme the union head's classes that belong to other
domains are summed into the background channel (a fixed 0/1 1x1 convolution after the softmax).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import Tensor, nn

from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.errors import ConfigError, DescriptorError, ModelError, UnknownNameError
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.unet import MultiDomainUNet
from pedseg.training.artifacts import MODEL_FORMAT, file_sha256, last_run

__all__ = [
    "DomainModel",
    "DomainSegmenter",
    "LoadedRun",
    "load_run",
    "resolve_run",
]

MODEL_JSON = "model.json"
WEIGHTS = "model.safetensors"
KINDS = ("model", "baseline")


class DomainSegmenter(nn.Module):
    """``x -> softmax(net.forward_domain(x, head))``, projected onto one domain's classes.

    Args:
        net: the trained network (eval mode).
        head: the head (and batch-norm) index this domain uses.
        classes: for a head shared by several domains (``joint``), the head's class index of this
            domain's label ``j`` at position ``j - 1``; ``None`` when the head is the domain's own.
    """

    projection: Tensor | None

    def __init__(
        self, net: MultiDomainUNet, *, head: int, classes: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.classes: tuple[int, ...] | None = None if classes is None else tuple(classes)
        total = net.num_classes[head]
        if self.classes is None:
            self.register_buffer("projection", None, persistent=False)
        else:
            weight = torch.zeros(len(self.classes) + 1, total, 1, 1)
            for j, cls in enumerate(self.classes, start=1):
                weight[j, cls] = 1.0
            weight[0, :, 0, 0] = 1.0 - weight[1:, :, 0, 0].sum(dim=0)
            self.register_buffer("projection", weight, persistent=False)
        self.train(net.training)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.net.size_multiple

    @property
    def num_classes(self) -> int:
        """Output channels: the domain's labels plus background."""
        return self.net.num_classes[self.head] if self.classes is None else len(self.classes) + 1

    def forward(self, x: Tensor) -> Tensor:
        probabilities = torch.softmax(self.net.forward_domain(x, self.head), dim=1)
        if self.projection is not None:
            # The network may be shared with other domains' segmenters and moved without this
            # buffer; follow the probabilities (a no-op while exporting).
            weight = self.projection.to(device=probabilities.device, dtype=probabilities.dtype)
            probabilities = nn.functional.conv2d(probabilities, weight)
        return probabilities


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


@dataclass(frozen=True)
class LoadedRun:
    """A loaded run folder: its ``model.json`` and one :class:`DomainModel` per domain."""

    path: Path
    card: dict[str, Any]
    domains: tuple[str, ...]
    models: Mapping[str, DomainModel] = field(repr=False, compare=False)

    def domain(self, name: str) -> DomainModel:
        """The segmenter of domain ``name``; other names raise :class:`UnknownNameError`."""
        if name not in self.models:
            raise UnknownNameError("domain of this model", name, self.domains)
        return self.models[name]


def resolve_run(path: Path | None) -> Path:
    """``path``, or the most recent run when ``None``; it must be a folder holding ``model.json``."""
    if path is None:
        found = last_run()
        if found is None:
            raise ModelError(
                "no trained model found (no recent run is recorded); pass --model RUN_FOLDER "
                "or train one with `pedseg train`"
            )
        path = found
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"{path}: no such run folder; pass --model with a folder written by `pedseg train`"
        )
    if not (path / MODEL_JSON).is_file():
        raise ModelError(
            f"{path}: not a run folder (no {MODEL_JSON}); pass --model with a folder written by "
            "`pedseg train`"
        )
    return path


def load_run(path: Path | None) -> LoadedRun:
    """Load the run folder ``path`` (default: the most recent run); see the module docstring."""
    root = resolve_run(path)
    card = _read_card(root)
    names = _name_list(card, "domains", root)
    if card["kind"] == "model":
        models = _load_model(root, card)
    else:
        models = _load_baseline(root, card, names)
    missing = [name for name in names if name not in models]
    if missing:
        raise ModelError(f"{root / MODEL_JSON}: domain {missing[0]!r} has no model; retrain")
    return LoadedRun(path=root, card=card, domains=tuple(names), models=models)


# ---------------------------------------------------------------------- model.json
def _read_card(root: Path) -> dict[str, Any]:
    where = root / MODEL_JSON
    try:
        card = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{where}: unreadable ({exc}); retrain or restore the file") from exc
    if not isinstance(card, dict):
        raise ModelError(f"{where}: must hold a JSON object, got {type(card).__name__}")
    version = card.get("format")
    if version != MODEL_FORMAT or isinstance(version, bool):
        raise ModelError(
            f"{where}: unknown model format {version!r} (this pedseg reads format "
            f"{MODEL_FORMAT}); load it with the pedseg version that wrote it "
            f"({card.get('pedseg_version', 'unknown')})"
        )
    if card.get("kind") not in KINDS:
        raise ModelError(
            f"{where}: unknown kind {card.get('kind')!r}; expected one of {', '.join(KINDS)}"
        )
    return card


def _field(card: Mapping[str, Any], key: str, kind: type | tuple[type, ...], root: Path) -> Any:
    value = card.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(
            f"{root / MODEL_JSON}: field {key!r} is missing or invalid ({value!r}); "
            "the file is damaged: retrain or restore it"
        )
    return value


def _name_list(card: Mapping[str, Any], key: str, root: Path) -> list[str]:
    names = _field(card, key, list, root)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ModelError(f"{root / MODEL_JSON}: field {key!r} must list distinct domain names")
    return list(names)


def _spec(card: Mapping[str, Any], name: str, root: Path) -> DomainSpec:
    descriptors = _field(card, "descriptors", dict, root)
    hashes = _field(card, "descriptor_hashes", dict, root)
    raw = descriptors.get(name)
    if not isinstance(raw, dict) or not isinstance(raw.get("labels"), dict):
        raise ModelError(f"{root / MODEL_JSON}: descriptors.{name} is missing or invalid")
    try:
        raw = {**raw, "labels": {int(k): v for k, v in raw["labels"].items()}}
        spec = parse_descriptor(raw, source=f"{root / MODEL_JSON}: descriptors.{name}")
    except (ValueError, DescriptorError) as exc:
        raise ModelError(f"{root / MODEL_JSON}: descriptors.{name} is invalid: {exc}") from exc
    if spec.name != name:
        raise ModelError(f"{root / MODEL_JSON}: descriptors.{name} names domain {spec.name!r}")
    if spec.content_hash() != hashes.get(name):
        raise ModelError(
            f"{root / MODEL_JSON}: descriptor of domain {name!r} does not match its recorded "
            "hash; the file was edited: restore it or retrain"
        )
    return spec


def _size(card: Mapping[str, Any], root: Path) -> tuple[int, int]:
    size = _field(card, "image_size", list, root)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise ModelError(f"{root / MODEL_JSON}: image_size must be [H, W], got {size!r}")
    return (int(size[0]), int(size[1]))


# ---------------------------------------------------------------------- weights
def _load_net(root: Path, card: Mapping[str, Any]) -> tuple[MultiDomainUNet, str, ModelConfig]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = root / WEIGHTS
    expected = _field(card, "model_sha256", str, root)
    if not weights.is_file():
        raise ModelError(f"{weights}: missing; the run did not finish an epoch: retrain")
    actual = file_sha256(weights)
    if actual != expected:
        raise ModelError(
            f"{weights}: SHA-256 {actual[:12]}… does not match model.json ({expected[:12]}…); "
            "the weights were modified or belong to another run: restore them or retrain"
        )
    try:
        config = ModelConfig.from_dict(_field(card, "model", dict, root))
        classes = _field(card, "num_classes", list, root)
        net = build_model(config, num_classes=classes)
        net.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except (ConfigError, SafetensorError, RuntimeError, OSError, TypeError) as exc:
        raise ModelError(
            f"{weights}: cannot be loaded into the model of model.json: {exc}"
        ) from exc
    net = net.float().eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net, actual, config


def _load_model(root: Path, card: Mapping[str, Any]) -> dict[str, DomainModel]:
    net, sha, config = _load_net(root, card)
    scheme = _field(card, "scheme", str, root)
    image_size = _size(card, root)
    mappings = _field(card, "label_mapping", dict, root)
    out: dict[str, DomainModel] = {}
    for name in _name_list(card, "domains", root):
        spec = _spec(card, name, root)
        head, classes = _mapping(mappings.get(name), spec, net, root, name)
        identity = classes == tuple(range(1, net.num_classes[head]))
        module = DomainSegmenter(net, head=head, classes=None if identity else classes).eval()
        out[name] = DomainModel(
            spec=spec,
            image_size=image_size,
            module=module,
            model_sha256=sha,
            scheme=scheme,
            embed=_embedder(net, head),
            arch=config.arch,
        )
    return out


def _mapping(
    raw: Any, spec: DomainSpec, net: MultiDomainUNet, root: Path, name: str
) -> tuple[int, tuple[int, ...]]:
    """``(head, head class of each of the domain's labels in descriptor order)``."""
    where = f"{root / MODEL_JSON}: label_mapping.{name}"
    try:
        head = int(raw["head"])
        table = {int(k): int(v) for k, v in raw["classes"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{where} is missing or invalid ({exc!r}); retrain") from exc
    if not 0 <= head < net.num_domains:
        raise ModelError(f"{where}: head {head} is not in [0, {net.num_domains})")
    total = net.num_classes[head]
    classes = tuple(table.get(label, -1) for label in spec.label_ids)
    if (
        set(table) != set(spec.label_ids)
        or not all(0 < c < total for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelError(f"{where} does not match the descriptor's labels; retrain")
    return head, classes


def _embedder(net: MultiDomainUNet, head: int) -> Callable[[Tensor], Tensor]:
    def embed(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return net.embed(x, head)

    return embed


def _load_baseline(
    root: Path, card: Mapping[str, Any], names: Sequence[str]
) -> dict[str, DomainModel]:
    members = _field(card, "members", dict, root)
    hashes = _field(card, "descriptor_hashes", dict, root)
    out: dict[str, DomainModel] = {}
    for name in names:
        relative = members.get(name)
        parts = PurePosixPath(relative).parts if isinstance(relative, str) else ()
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            raise ModelError(
                f"{root / MODEL_JSON}: members.{name} must be a relative folder inside the run, "
                f"got {relative!r}"
            )
        member_root = resolve_run(root.joinpath(*parts))
        member_card = _read_card(member_root)
        if member_card["kind"] != "model":
            raise ModelError(f"{member_root / MODEL_JSON}: a baseline member must be a model")
        loaded = _load_model(member_root, member_card)
        if name not in loaded:
            raise ModelError(f"{member_root / MODEL_JSON}: holds no model of domain {name!r}")
        if loaded[name].spec.content_hash() != hashes.get(name):
            raise ModelError(
                f"{member_root / MODEL_JSON}: descriptor of domain {name!r} does not match the "
                f"hash in {root / MODEL_JSON}; the run was mixed up: retrain"
            )
        out[name] = loaded[name]
    return out
