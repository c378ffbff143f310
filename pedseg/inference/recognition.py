"""Which domain does a scan belong to, and does it belong to any? (beyond the paper)

The supervised contrastive loss (paper Eq. 3) clusters the bottleneck embedding ``z`` (global max
pooling, L2-normalised: cosine geometry) by domain. At the end of training each domain's cluster is
summarised in the run (:func:`store_profile`): ``RUN/domains.safetensors`` holds the centroids and the
origin, its metadata (and the readable ``RUN/domains.json``) the spread and the weights' SHA-256.

Geometry: ``z`` comes after a ReLU, so every unit ``z`` shares a large positive component and raw
cosine distances are all tiny and dominated by it. Angles are therefore measured around an *origin*,
the mean of the domains' mean unit embeddings (zero for a single-domain model, e.g. a baseline
member): ``u = unit(unit(z) - origin)``. Centroid = normalised mean of a domain's ``u``; spread = mean,
std, 95th and 99th percentiles of the cosine distances ``1 - u . centroid`` of its slices. Profile
slices: the central 80 % of every training case's slices (a seeded subsample of at most
:data:`MAX_PROFILE_SLICES` per domain), each embedded with its own domain's batch norm.

Identifying a scan (:class:`Recognizer`): an unknown scan must be embedded with *some* domain's batch
norm, so it is embedded once per candidate domain ``k``, preprocessed as ``k`` would be (its slice axis,
normalisation, the run's image size) and with route ``k``; the distance to centroid ``k`` is divided
by domain ``k``'s 95th percentile (``1.0`` = as far as the farthest 5 % of ``k``'s own training
slices). :data:`RECOGNITION_SLICES` slices at the same relative positions in the central 80 % of the
stack vote. A candidate ``k`` *claims* a slice when, in ``k``'s space, ``k``'s centroid is nearer than
the cross centroid ``c_kj`` of every other candidate ``j`` (see :mod:`pedseg.runfolder.profiles`;
runs without cross centroids: every candidate claims every slice). Each slice votes for the claiming
candidate with the smallest normalised distance (for the nearest candidate when none claims it); the
scan's domain is the majority (ties: smaller median distance), its confidence the vote share. The scan is
out-of-distribution when the chosen domain's median normalised distance exceeds
:data:`OOD_THRESHOLD` (1.25: a quarter beyond its 95th percentile; ``--ood-threshold`` changes it):
another joint, another sequence, an adult scan.
Each candidate is compared only with its own profile, so a baseline run (one model, one embedding
space per domain; profiles stored per member) is handled the same way.

A candidate whose embeddings are already known (:class:`KnownEmbeddings`: the segmentation pass of a
scan predicted as that domain, same descriptor and image size) is not embedded again: its voting
slices are picked from them (same picks, same slices, the same network up to float rounding, or
the export's folded batch norm), so ``pedseg predict --domain`` checks a scan without a second
network call for its own domain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pedseg.data.preprocess import prepare_volume, slice_count
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError, ProfileUnavailableError
from pedseg.inference.routing import KnownEmbeddings
from pedseg.io.volume import Volume
from pedseg.runfolder.profiles import (
    OOD_THRESHOLD,
    DomainProfile,
    Embedder,
    central_range,
    embed_slices,
    even_picks,
    load_profiles,
)

if TYPE_CHECKING:
    import torch

    from pedseg.inference.predictor import ModelInfo
    from pedseg.runfolder.index import RunIndex
    from pedseg.runfolder.loading import LoadedRun

__all__ = [
    "OOD_THRESHOLD",
    "Candidate",
    "KnownEmbeddings",
    "Recognition",
    "Recognizer",
    "current_exports",
    "recognizer_for",
]

logger = logging.getLogger(__name__)
RECOGNITION_SLICES = 32


@dataclass(frozen=True)
class Candidate:
    """A domain a scan may belong to: how to preprocess and embed it, and its profile."""

    spec: DomainSpec
    image_size: tuple[int, int]
    embed: Embedder
    profile: DomainProfile


@dataclass(frozen=True)
class Recognition:
    """What a scan looks like (see the module docstring). ``distances``: per candidate domain,
    the median normalised distance over the voting slices."""

    domain: str
    confidence: float
    votes: Mapping[str, int]
    distances: Mapping[str, float]
    ood: bool
    threshold: float
    n_slices: int

    def warning(self, expected: str | None = None) -> str | None:
        """A one-line warning when the scan looks like none of the domains, or (``expected``
        given) like another domain than ``expected``; ``None`` when all is well."""
        best = self.distances[self.domain]
        if self.ood:
            return (
                f"looks like none of the model's domains: closest {self.domain} at {best:.2f} "
                f"(> {self.threshold:g} x its 95th percentile)"
            )
        if expected is not None and expected != self.domain:
            return (
                f"looks like domain {self.domain} ({self.confidence:.0%} of slices, distance "
                f"{best:.2f}), not {expected} (distance {self.distances[expected]:.2f}); "
                f"check --domain"
            )
        return None

    def to_dict(self, expected: str | None = None) -> dict[str, Any]:
        """Plain JSON types (the ``recognition`` entry of a case report)."""
        out: dict[str, Any] = {
            "domain": self.domain,
            "confidence": round(self.confidence, 4),
            "ood": self.ood,
            "threshold": self.threshold,
            "votes": dict(self.votes),
            "median_distance": {k: round(v, 4) for k, v in self.distances.items()},
            "n_slices": self.n_slices,
        }
        if expected is not None:
            out["expected"] = expected
        warning = self.warning(expected)
        if warning is not None:
            out["warning"] = warning
        return out


class Recognizer:
    """Identifies the domain of scans against a run's domain profiles."""

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        threshold: float = OOD_THRESHOLD,
        slices: int = RECOGNITION_SLICES,
        batch_size: int = 32,
    ) -> None:
        if not candidates:
            raise ConfigError("domain recognition needs at least one candidate domain")
        if isinstance(threshold, bool) or not threshold > 0:
            raise ConfigError(f"the OOD threshold must be a positive number, got {threshold!r}")
        if isinstance(slices, bool) or not isinstance(slices, int) or slices < 1:
            raise ConfigError(f"recognition slices must be a positive integer, got {slices!r}")
        self.candidates = tuple(candidates)
        self.threshold = float(threshold)
        self.slices = slices
        self.batch_size = batch_size

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(c.spec.name for c in self.candidates)

    def profiles(self) -> dict[str, DomainProfile]:
        """Each candidate domain's profile (also the reference of the out-of-distribution checks)."""
        return {c.spec.name: c.profile for c in self.candidates}

    @classmethod
    def from_run(
        cls,
        run: LoadedRun,
        *,
        threshold: float = OOD_THRESHOLD,
        slices: int = RECOGNITION_SLICES,
        device: torch.device | None = None,
    ) -> Recognizer:
        """Candidates = every domain of ``run``, embedded by its PyTorch network (moved to
        ``device``); :class:`ModelError` when it has no profiles."""
        from pedseg.runfolder.loading import numpy_embedder

        profiles = load_profiles(run.index)
        candidates: list[Candidate] = []
        for name in run.domains:
            model = run.domain(name)
            if model.embed is None:
                raise ModelError(f"{run.path}: domain {name!r} has no embedding to recognise with")
            if device is not None:
                model.module.to(device)
            embed = numpy_embedder(model)
            candidates.append(Candidate(model.spec, model.image_size, embed, profiles[name]))
        return cls(candidates, threshold=threshold, slices=slices)

    @classmethod
    def from_exports(
        cls,
        run: RunIndex,
        exports: Mapping[str, tuple[ModelInfo, bytes]],
        *,
        threshold: float = OOD_THRESHOLD,
        slices: int = RECOGNITION_SLICES,
        device: str = "cpu",
        allow_cpu_fallback: bool = False,
    ) -> Recognizer:
        """Candidates = every domain of ``run``, embedded by its ONNX export (``exports``: per
        domain the checked export, see :func:`current_exports`); no torch. A domain's session is
        created when a scan is first embedded as that domain (with ``--domain``, the predicted
        domain takes its embeddings from the segmentation pass and never needs its own)."""
        profiles = load_profiles(run)
        candidates = [
            Candidate(
                info.spec,
                info.image_size,
                _OnnxEmbedder(data, info.source, device, allow_cpu_fallback),
                profiles[name],
            )
            for name, (info, data) in exports.items()
        ]
        return cls(candidates, threshold=threshold, slices=slices)

    def identify(
        self, volume: Volume, *, known: Mapping[str, KnownEmbeddings] | None = None
    ) -> Recognition:
        """The domain ``volume`` (canonical) looks like; see the module docstring. ``known``: per
        domain, embeddings the caller already has (used where they fit the candidate)."""
        counts = [slice_count(volume, c.spec) for c in self.candidates]
        ranges = [central_range(n) for n in counts]
        count = min(self.slices, *(hi - lo for lo, hi in ranges))
        if count < 1:
            raise ModelError("the scan has no slices to recognise its domain from")
        table = np.empty((len(self.candidates), count), dtype=np.float64)
        claimed = np.empty((len(self.candidates), count), dtype=bool)
        names = self.domains
        for k, (candidate, n) in enumerate(zip(self.candidates, counts, strict=True)):
            picks = even_picks(n, count)  # only these slices are resized for the network
            given = (known or {}).get(candidate.spec.name)
            if given is not None and given.fits(candidate, n):
                z = np.asarray(given.z[picks], dtype=np.float64)
            else:
                z = self._embed(volume, candidate, picks)
            table[k] = candidate.profile.distances(z)
            claimed[k] = candidate.profile.claims(z, among=names)
        nobody = ~claimed.any(axis=0)
        winners = np.where(
            nobody, np.argmin(table, axis=0), np.argmin(np.where(claimed, table, np.inf), axis=0)
        )
        votes = np.bincount(winners, minlength=len(names))
        medians = np.median(table, axis=1)
        best = min(range(len(names)), key=lambda k: (-int(votes[k]), float(medians[k])))
        return Recognition(
            domain=names[best],
            confidence=float(votes[best]) / count,
            votes={n: int(v) for n, v in zip(names, votes, strict=True)},
            distances={n: float(m) for n, m in zip(names, medians, strict=True)},
            ood=bool(medians[best] > self.threshold),
            threshold=self.threshold,
            n_slices=count,
        )

    def _embed(self, volume: Volume, candidate: Candidate, picks: np.ndarray) -> np.ndarray:
        images = prepare_volume(
            volume, candidate.spec, image_size=candidate.image_size, picks=picks
        ).images
        return embed_slices(candidate.embed, images, batch_size=self.batch_size)


class _OnnxEmbedder:
    """The ``embedding`` output of an exported graph; the session is made on first use."""

    def __init__(self, data: bytes, where: Path, device: str, allow_cpu_fallback: bool) -> None:
        self._data = data
        self._where = where
        self._device = device
        self._fallback = allow_cpu_fallback
        self._backend: Any = None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self._backend is None:
            from pedseg.inference.backends import OnnxBackend

            self._backend = OnnxBackend(
                self._data,
                device=self._device,
                allow_cpu_fallback=self._fallback,
                where=self._where,
            )
            self._data = b""
        _, embedding = self._backend.segment_and_embed(images)
        return np.asarray(embedding)


def current_exports(run: RunIndex) -> dict[str, tuple[ModelInfo, bytes]] | None:
    """Every domain's ONNX export in ``run`` with its checked bytes, when each one exists, was
    exported from the run's current weights and has the embedding output; else ``None`` (an
    unreadable export too: the network then embeds, as for a run without exports)."""
    from pedseg.inference.predictor import onnx_info

    out: dict[str, tuple[ModelInfo, bytes]] = {}
    for name in run.domains:
        path = run.layout.onnx(name)
        if not path.is_file():
            return None
        try:
            info, data = onnx_info(path, name)
        except ModelError as exc:
            logger.info("recognition embeds with PyTorch: %s", exc)
            return None
        if info.model_sha256 != run.entry(name).model_sha256 or not info.embeds:
            return None
        out[name] = (info, data)
    return out


def recognizer_for(
    model: Path | None,
    *,
    device: str = "cpu",
    threshold: float | None = None,
    allow_cpu_fallback: bool = False,
    backend: str | None = None,
) -> Recognizer:
    """The recognizer of a run folder (default: the last run) with the OOD ``threshold`` (default
    :data:`OOD_THRESHOLD`); :class:`ModelError` for a folder of ONNX exports (no embedding there)
    or a run without domain profiles. Unless ``backend`` is ``torch``, the run's ONNX exports
    embed the scans where every domain has an up-to-date one (no torch imported); otherwise its
    PyTorch network."""
    from pedseg.inference.predictor import is_onnx_source
    from pedseg.runfolder.index import index_run

    if model is not None and is_onnx_source(Path(model).expanduser()):
        raise ProfileUnavailableError(
            f"{model}: ONNX exports carry no embedding, so the scans' domain cannot be "
            "recognised; pass --domain NAME, or --model with the run folder"
        )
    chosen = OOD_THRESHOLD if threshold is None else threshold
    run = index_run(model)
    exports = current_exports(run) if backend != "torch" else None
    if exports is not None:
        return Recognizer.from_exports(
            run,
            exports,
            threshold=chosen,
            device=device,
            allow_cpu_fallback=allow_cpu_fallback,
        )
    from pedseg.runfolder.loading import load_run
    from pedseg.runtime import resolve_device

    torch_device = resolve_device(device, allow_cpu_fallback=allow_cpu_fallback)
    return Recognizer.from_run(load_run(run), threshold=chosen, device=torch_device)
