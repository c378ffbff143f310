"""Whole-volume prediction for one domain: slices in, label map on the input's grid out.

Pipeline (training shares every geometric step through :mod:`pedseg.data.preprocess`)::

    canonical volume -> normalise, slice along the domain's axis, resize to image_size
      (prepare_volume) -> batched network -> probabilities resized back to the slice's original
      grid (restore_slices) -> argmax -> stack -> 3D post-processing -> label map (canonical)

Probabilities are resized *before* the argmax, batch by batch, so the full-resolution probability
volume only exists when it is asked for (``keep_probabilities``). With ``embed``, the backend's
embedding of every slice comes from the same network pass (:func:`~pedseg.inference.backends.
embedding_call`; ``None`` for backends without one, e.g. int8 graphs): the domain check needs no
second call. :meth:`Predictor.prepare` is the first step alone, so that a batch can prepare the next
case while the network runs on the current one. The label map is canonical; write
it with :func:`pedseg.io.write_like` to get the input's exact on-disk geometry.

Models come from a run folder (PyTorch weights, or its ``onnx/<domain>.onnx`` export) or from a
folder of exported ``.onnx`` files whose metadata carries the descriptor (no run needed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pedseg.data.label_chain import LabelChain, chain_from_optional
from pedseg.data.preprocess import SliceStack, prepare_volume, restore_argmax, restore_slices
from pedseg.domains.registry import normalizations
from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.errors import ConfigError, ModelError, PlanError, UnknownNameError
from pedseg.inference.backends import (
    BACKENDS,
    EMBEDDING_OUTPUT,
    Backend,
    OnnxBackend,
    TorchBackend,
    embedding_call,
    run_batches,
)
from pedseg.inference.chain import ChainRule
from pedseg.inference.int8_choice import onnx_backend_name, onnx_source_int8, run_int8
from pedseg.inference.postprocess import ComponentRule, postprocess
from pedseg.inference.tta import ShiftTTA, chain_shifts, with_tta
from pedseg.io.volume import Volume
from pedseg.runfolder import is_run_folder

__all__ = ["ModelInfo", "Prediction", "Predictor", "label_dtype", "open_predictor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What a prediction was made with (recorded in every report)."""

    spec: DomainSpec
    image_size: tuple[int, int]
    model_sha256: str
    scheme: str
    source: Path  # run folder or .onnx file
    components: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Per label name ``(keep_largest, min_volume_mm3)`` from the training labels."""
    label_chain: LabelChain | None = None
    """The training labels' chain (vertebrae), renumbered after prediction."""
    embeds: bool = False
    """Whether the exported graph also outputs the embedding (PyTorch models: see the backend)."""

    def chain_rule(self) -> ChainRule | None:
        """:attr:`label_chain` with label ids, for :func:`~pedseg.inference.chain.order_chain`."""
        chain = self.label_chain
        ids = {name: label_id for label_id, name in self.spec.labels}
        if chain is None or any(name not in ids for name in chain.labels):
            return None
        return ChainRule(
            ids=tuple(ids[name] for name in chain.labels),
            axis=chain.axis,
            gap_mm=chain.gap_mm,
            extent_mm=chain.extent_mm,
            volume_mm3=chain.volume_mm3,
            min_unit_mm3=chain.min_unit_mm3,
            anchor=ids.get(self.spec.postprocess.chain_anchor or ""),
        )

    def component_rules(self) -> dict[int, ComponentRule]:
        """:attr:`components` by label id, for :func:`~pedseg.inference.postprocess.postprocess`."""
        ids = {name: label_id for label_id, name in self.spec.labels}
        return {
            ids[name]: ComponentRule(keep, volume)
            for name, (keep, volume) in self.components.items()
            if name in ids
        }


@dataclass(frozen=True, eq=False)
class Prediction:
    """One volume's result on its canonical grid."""

    labels: np.ndarray  # (X, Y, Z) uint8 (uint16 beyond 255 labels)
    probabilities: np.ndarray | None  # (X, Y, Z, C) float32 when asked for
    axis: int  # canonical slice axis
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``preprocess`` (normalise, slice, resize, and restoring the probabilities to the
    input grid + argmax), ``inference`` (the network only), ``postprocess``."""
    embeddings: np.ndarray | None = None
    """``(S, D)`` float32, the network's embedding of every prepared slice (stack order), when
    asked for and the backend gives it."""
    tta: str = ""
    """The test-time augmentations that ran on this volume (:attr:`Predictor.tta_name`'s form;
    chain shifts only where the chain axis lies in the slice plane)."""


def label_dtype(num_labels: int) -> np.dtype:
    """uint8, or uint16 when a domain has more than 255 labels."""
    return np.dtype(np.uint8) if num_labels <= 255 else np.dtype(np.uint16)


class Predictor:
    """A domain's segmenter: a backend plus what is needed to feed it and read its output."""

    def __init__(
        self,
        info: ModelInfo,
        backend: Backend,
        *,
        batch_size: int = 8,
        postprocess: bool = True,
        tta: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
        self.info = info
        self.backend = backend
        self.batch_size = batch_size
        self.postprocess = postprocess
        self.flip_tta = tta and info.spec.flip != "none"
        """Whether flip test-time augmentation runs (asked for, and the domain trains with flips)."""
        self.chain_tta = tta and info.label_chain is not None
        """Whether slices are also shifted along the label chain (asked for, and the model has a
        chain; a volume whose chain axis is its slice axis gets no shifts)."""
        self._network = with_tta(backend, info.spec.flip) if self.flip_tta else backend

    @property
    def tta(self) -> bool:
        """Whether any test-time augmentation runs (:mod:`pedseg.inference.tta`)."""
        return self.flip_tta or self.chain_tta

    @property
    def tta_name(self) -> str:
        """The augmentations run, for reports: ``flip-height``, ``chain-shifts``, both joined by
        ``+``, or ``""``."""
        return self._views(shifts=self.chain_tta)

    def _views(self, *, shifts: bool) -> str:
        flip = [f"flip-{self.info.spec.flip}"] if self.flip_tta else []
        return "+".join([*flip, *(["chain-shifts"] if shifts else [])])

    @property
    def spec(self) -> DomainSpec:
        return self.info.spec

    @property
    def embeds(self) -> bool:
        """Whether :meth:`predict` can return the embeddings of its pass."""
        return embedding_call(self._network) is not None

    def prepare(self, volume: Volume) -> SliceStack:
        """Normalise, slice and resize ``volume`` as :meth:`predict` does (its first step)."""
        return prepare_volume(volume, self.info.spec, image_size=self.info.image_size)

    def predict(
        self,
        volume: Volume,
        *,
        keep_probabilities: bool = False,
        embed: bool = False,
        stack: SliceStack | None = None,
        stack_seconds: float = 0.0,
    ) -> Prediction:
        """Segment ``volume`` (canonical); see the module docstring for the steps. ``stack``:
        :meth:`prepare`'s result for this volume, when made beforehand (in ``stack_seconds``)."""
        spec = self.info.spec
        t0 = time.perf_counter() - stack_seconds
        if stack is None:
            stack = self.prepare(volume)
        t1 = time.perf_counter()
        rows, cols = stack.in_plane_shape
        n = stack.num_slices
        dtype = label_dtype(len(spec.labels))
        labels = np.empty((n, rows, cols), dtype=dtype)
        probs_out: np.ndarray | None = None
        if keep_probabilities:
            probs_out = np.empty((n, rows, cols, spec.num_classes), dtype=np.float32)
        restore_time = 0.0

        def sink(start: int, probs: np.ndarray) -> None:
            nonlocal restore_time
            if probs.shape[1] != spec.num_classes:
                raise ModelError(
                    f"the model gives {probs.shape[1]} classes for domain {spec.name!r}, "
                    f"which has {spec.num_classes} (labels + background); wrong model?"
                )
            r0 = time.perf_counter()
            stop = start + probs.shape[0]
            if probs_out is not None:
                full = restore_slices(probs, in_plane_shape=(rows, cols), axis=0)  # (b, A, B, C)
                labels[start:stop] = np.argmax(full, axis=-1)
                probs_out[start:stop] = full
            else:  # no full-resolution probabilities: interpolated only near boundaries
                labels[start:stop] = restore_argmax(probs, in_plane_shape=(rows, cols))
            restore_time += time.perf_counter() - r0

        network: Any = self._shifted(volume, stack)
        views = self._views(shifts=isinstance(network, ShiftTTA))
        both = embedding_call(network) if embed else None
        embedded: list[np.ndarray] = []
        if both is not None:

            def network(images: np.ndarray) -> np.ndarray:
                probs, z = both(images)
                embedded.append(z)
                return probs

        run_batches(network, stack.images, batch_size=self.batch_size, sink=sink)
        t2 = time.perf_counter()
        canonical = np.moveaxis(labels, 0, stack.axis)
        if self.postprocess:
            canonical = postprocess(
                canonical,
                spec=spec.postprocess,
                spacing=volume.spacing,
                label_ids=spec.label_ids,
                components=self.info.component_rules(),
                chain=self.info.chain_rule(),
            )
        t3 = time.perf_counter()
        probabilities = None if probs_out is None else np.moveaxis(probs_out, 0, stack.axis)
        timings = {
            "preprocess": (t1 - t0) + restore_time,
            "inference": (t2 - t1) - restore_time,
            "postprocess": t3 - t2,
        }
        return Prediction(
            labels=np.ascontiguousarray(canonical),
            probabilities=probabilities,
            axis=stack.axis,
            timings=timings,
            embeddings=np.concatenate(embedded) if embedded else None,
            tta=views,
        )

    def _shifted(self, volume: Volume, stack: SliceStack) -> Backend:
        """The network, averaged over shifts along the label chain when :attr:`chain_tta` applies
        to this volume (its chain axis lies in the slice plane)."""
        chain = self.info.label_chain
        if not self.chain_tta or chain is None or chain.axis == stack.axis:
            return self._network
        in_plane = [a for a in range(3) if a != stack.axis]
        k = in_plane.index(chain.axis)
        pixels = self.info.image_size[k] / stack.in_plane_shape[k]
        gap_px = chain.gap_mm / float(volume.spacing[chain.axis]) * pixels
        return ShiftTTA(self._network, dim=2 + k, shifts=chain_shifts(gap_px))


# ------------------------------------------------------------------------------ opening models
def is_onnx_source(path: Path) -> bool:
    """A ``.onnx`` file, or a folder of them that is not a run folder (no model card)."""
    if path.is_file():
        return path.suffix.lower() == ".onnx"
    return path.is_dir() and not is_run_folder(path) and any(path.glob("*.onnx"))


def onnx_info(path: Path, domain: str) -> tuple[ModelInfo, bytes]:
    """The model facts an exported file carries in its metadata, and the checked model bytes.

    The bytes come from :func:`pedseg.export.onnx.load_onnx_model`, which refuses external data;
    sessions are created from them, so onnxruntime never opens another file.
    """
    from pedseg.export.onnx import load_onnx_model

    proto, meta = load_onnx_model(path)
    where = f"{path} (ONNX metadata)"
    missing = [k for k in ("descriptor", "image_size", "model_sha256") if k not in meta]
    if missing:
        raise ModelError(
            f"{path}: not a pedseg export (metadata lacks {', '.join(missing)}); "
            "export it with pedseg export-onnx"
        )
    try:
        raw: Any = json.loads(meta["descriptor"])
        size = json.loads(meta["image_size"])
    except json.JSONDecodeError as error:
        raise ModelError(f"{where}: invalid JSON ({error}); re-export the model") from None
    if isinstance(raw, dict) and isinstance(raw.get("labels"), dict):
        labels = raw["labels"]
        raw["labels"] = {int(k) if str(k).isdigit() else k: v for k, v in labels.items()}
    spec = parse_descriptor(raw, source=where, known_normalizations=normalizations())
    if spec.name != domain:
        raise ModelError(f"{path}: holds domain {spec.name!r}, not {domain!r}")
    expected = meta.get("descriptor_hash")
    if expected is not None and expected != spec.content_hash():
        raise ModelError(f"{where}: descriptor hash mismatch (edited file?); re-export the model")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)):
        raise ModelError(f"{where}: image_size must be [H, W], got {meta['image_size']!r}")
    info = ModelInfo(
        spec=spec,
        image_size=(size[0], size[1]),
        model_sha256=meta["model_sha256"],
        scheme=meta.get("scheme", "unknown"),
        source=path,
        components=_components(meta.get("components"), where),
        label_chain=_label_chain(meta.get("label_chain"), where, spec),
        embeds=any(output.name == EMBEDDING_OUTPUT for output in proto.graph.output),
    )
    return info, proto.SerializeToString()


def _components(text: str | None, where: str) -> dict[str, tuple[int, float]]:
    """The ``components`` metadata of an export (absent in exports made before it)."""
    if text is None:
        return {}
    try:
        raw = json.loads(text)
        return {str(k): (int(v[0]), float(v[1])) for k, v in raw.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ModelError(f"{where}: components is invalid; re-export the model") from None


def _label_chain(text: str | None, where: str, spec: DomainSpec) -> LabelChain | None:
    """The ``label_chain`` metadata of an export (absent in exports made before it)."""
    if text is None:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        raise ModelError(f"{where}: label_chain is invalid JSON; re-export the model") from None
    try:
        return chain_from_optional(raw, source=f"{where}: label_chain", names=spec.label_names)
    except PlanError as exc:
        raise ModelError(f"{exc}; re-export the model") from None


def _onnx_file(folder: Path, domain: str) -> Path:
    path = folder / f"{domain}.onnx"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.onnx"))
        raise UnknownNameError(f"domain of the ONNX folder {folder}", domain, known)
    return path


def open_predictor(
    model: Path | None,
    domain: str,
    *,
    backend: str | None = None,
    device: str = "auto",
    allow_cpu_fallback: bool = False,
    batch_size: int = 8,
    postprocess: bool = True,
    tta: bool = False,
) -> Predictor:
    """The predictor of ``domain`` from a run folder (default: the last run), an ONNX folder or an
    ``.onnx`` file. ``backend`` None picks onnx where an up-to-date export exists, else torch
    (and the int8 export where :mod:`pedseg.inference.int8_choice` says so). ``tta``: flip
    test-time augmentation (:mod:`pedseg.inference.tta`)."""
    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    options: dict[str, Any] = {"batch_size": batch_size, "postprocess": postprocess, "tta": tta}
    if model is not None and is_onnx_source(model):
        if backend == "torch":
            raise ModelError(
                f"{model}: an ONNX export runs with onnxruntime only; drop --backend torch or "
                "pass the run folder as --model"
            )
        int8 = onnx_source_int8(model, domain, backend=backend, device=device)
        path = int8 or (model if model.is_file() else _onnx_file(model, domain))
        info, data = onnx_info(path, domain)
        name = onnx_backend_name(path)
        onnx = OnnxBackend(
            data, device=device, allow_cpu_fallback=allow_cpu_fallback, where=path, name=name
        )
        return Predictor(info, onnx, **options)

    from pedseg.runfolder.index import index_run

    run = index_run(model)
    entry = run.entry(domain)
    sha = entry.model_sha256
    int8 = run_int8(run.layout, domain, backend=backend, model_sha256=sha, device=device)
    if int8 is not None:
        info, data = onnx_info(int8, domain)
        onnx = OnnxBackend(
            data, device=device, allow_cpu_fallback=allow_cpu_fallback, where=int8, name="onnx-int8"
        )
        return Predictor(info, onnx, **options)
    exported = run.layout.onnx(domain)
    if backend != "torch" and exported.is_file():
        info, data = onnx_info(exported, domain)
        if info.model_sha256 == sha:
            onnx = OnnxBackend(
                data, device=device, allow_cpu_fallback=allow_cpu_fallback, where=exported
            )
            return Predictor(info, onnx, **options)
        stale = f"{exported} was exported from another model (weights changed since)"
        if backend == "onnx":
            raise ModelError(f"{stale}; re-export with pedseg export-onnx --overwrite")
        logger.warning("%s; using PyTorch (re-export with pedseg export-onnx --overwrite)", stale)
    elif backend == "onnx":
        raise ModelError(
            f"{run.path}: no ONNX export of domain {domain!r} ({exported} missing); run "
            "pedseg export-onnx first, or use --backend torch"
        )
    from pedseg.runfolder.loading import load_run

    domain_model = load_run(run).domain(domain)
    info = ModelInfo(
        spec=domain_model.spec,
        image_size=domain_model.image_size,
        model_sha256=domain_model.model_sha256,
        scheme=domain_model.scheme,
        source=run.path,
        components=domain_model.components,
        label_chain=domain_model.label_chain,
    )
    torch_backend = TorchBackend(
        domain_model.module, device=device, allow_cpu_fallback=allow_cpu_fallback
    )
    return Predictor(info, torch_backend, **options)
