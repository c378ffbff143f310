"""Domain profiles: each domain's cluster of bottleneck embeddings, stored in a trained run.

See :mod:`pedseg.inference.recognition` for the geometry and how profiles identify scans. A run holds
``domains.safetensors`` (centroids and origin; metadata: spread and the weights' SHA-256) and the
readable ``domains.json``; the card records the profile file's SHA-256, checked on every read.
Profiles are computed at the end of training from the run's kept weights.

Cross centroids: besides its own cluster, domain ``k``'s profile holds, for every other domain ``j``
whose training scans were available, the centroid of ``j``'s scans *preprocessed as k and embedded
through k's batch norm* (``c_kj``). A scan of domain ``j`` pushed through ``k``'s batch norm may land
closer to ``k``'s own centroid than ``k``'s worst training slices do (nothing in training separates
that pair), but it lands closer still to ``c_kj``: within each candidate's space the nearest centroid
tells the domains apart (on the real pelvis/spine data: every held-out scan, see
``benchmarks/results/recognition.md``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pedseg.errors import ModelError, ProfileUnavailableError
from pedseg.io.atomic import atomic_path
from pedseg.runfolder.acquisition import AcquisitionProfile
from pedseg.runfolder.card import read_card, write_card
from pedseg.runfolder.index import RunIndex
from pedseg.runfolder.integrity import file_sha256, verify_sha256
from pedseg.runfolder.layout import RunLayout

if TYPE_CHECKING:
    import torch

    from pedseg.domains.spec import DomainSpec
    from pedseg.io.volume import Volume

__all__ = [
    "CENTRAL_FRACTION",
    "MAX_PROFILE_SLICES",
    "OOD_THRESHOLD",
    "DomainProfile",
    "central_range",
    "cross_slices",
    "embed_slices",
    "even_picks",
    "load_profiles",
    "profile_from_embeddings",
    "read_profile",
    "store_profile",
    "write_profile",
]

logger = logging.getLogger(__name__)

PROFILE_FORMAT = 1
OOD_THRESHOLD = 1.25  # measured on held-out real scans: benchmarks/results/recognition.md
"""A scan is out-of-distribution when its chosen domain's median normalised distance is above this."""
MAX_PROFILE_SLICES = 2000
CENTRAL_FRACTION = 0.8
_MIN_SCALE = 1e-4  # floor of the 95th percentile used as the distance unit
CROSS_SLICES_PER_CASE = 16
Embedder = Callable[[np.ndarray], np.ndarray]
"""Slices (N, 1, H, W) float32 -> embeddings (N, D), numpy in and out (a torch module's through
:func:`pedseg.runfolder.loading.numpy_embedder`, an ONNX export's embedding output)."""


# ---------------------------------------------------------------------------------- profiles
@dataclass(frozen=True, eq=False)
class DomainProfile:
    """One domain's embedding cluster: unit centroid and spread of cosine distances to it."""

    name: str
    centroid: np.ndarray  # (D,) float32, unit norm, of the centred embeddings
    origin: np.ndarray  # (D,) float32: subtracted from unit z before measuring angles
    mean: float
    std: float
    p95: float
    p99: float
    n_slices: int
    source: str = "training"  # training | extension | adaptation
    #: Other domain name -> unit centroid of its scans in this domain's space (module docstring).
    cross: Mapping[str, np.ndarray] = field(default_factory=dict)
    #: What the domain's training scans looked like (geometry, intensities, label volumes); the
    #: reference of the out-of-distribution checks. ``None`` in profiles written before it.
    acquisition: AcquisitionProfile | None = None

    @property
    def scale(self) -> float:
        """The distance unit: the 95th percentile (floored, for degenerate clusters)."""
        return max(self.p95, _MIN_SCALE)

    def summary(self) -> dict[str, Any]:
        keys = ("mean", "std", "p95", "p99")
        return {
            **{k: float(getattr(self, k)) for k in keys},
            "n_slices": self.n_slices,
            "source": self.source,
        }

    def distances(self, z: np.ndarray) -> np.ndarray:
        """Cosine distances of embeddings ``z`` (N, D) to the centroid, in units of p95."""
        centred = _unit(_unit(z) - self.origin.astype(np.float64))
        return (1.0 - centred @ self.centroid.astype(np.float64)) / self.scale

    def claims(self, z: np.ndarray, among: Sequence[str] | None = None) -> np.ndarray:
        """Per embedding (N, D) of a scan preprocessed and embedded as this domain: is this
        domain's centroid nearer than every cross centroid (of the domains in ``among``, default
        all)? All True when the profile holds no cross centroid."""
        names = [n for n in self.cross if among is None or n in among]
        if not names:
            return np.ones(z.shape[0], dtype=bool)
        centred = _unit(_unit(z) - self.origin.astype(np.float64))
        own = centred @ self.centroid.astype(np.float64)
        others = np.stack([centred @ self.cross[n].astype(np.float64) for n in names])
        return np.asarray(own >= others.max(axis=0))


def _unit(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def shared_origin(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The origin of a shared embedding space: the mean of the domains' mean unit embeddings
    (zeros for a single domain, e.g. a baseline member)."""
    if len(embeddings) < 2:
        return np.zeros(embeddings[0].shape[1], dtype=np.float32)
    return np.mean([_unit(z).mean(axis=0) for z in embeddings], axis=0).astype(np.float32)


def profile_from_embeddings(
    name: str, z: np.ndarray, *, origin: np.ndarray | None = None, source: str = "training"
) -> DomainProfile:
    """The profile of embeddings ``z`` (N, D) (normalised here) around ``origin`` (default 0)."""
    if z.ndim != 2 or z.shape[0] < 1:
        raise ModelError(f"domain {name!r}: no slices to profile the embedding with")
    origin = np.zeros(z.shape[1], np.float32) if origin is None else np.asarray(origin, np.float32)
    unit = _unit(_unit(z) - origin.astype(np.float64))
    centroid = _unit(unit.mean(axis=0))
    distances = 1.0 - unit @ centroid
    return DomainProfile(
        name=name,
        centroid=centroid.astype(np.float32),
        origin=origin,
        mean=float(distances.mean()),
        std=float(distances.std()),
        p95=float(np.percentile(distances, 95)),
        p99=float(np.percentile(distances, 99)),
        n_slices=int(z.shape[0]),
        source=source,
    )


def write_profile(
    run_dir: Path | RunLayout, profiles: Sequence[DomainProfile], *, model_sha256: str
) -> Path:
    """Write ``domains.safetensors`` and ``domains.json`` into the run folder (atomically each)
    and record the profile file's SHA-256 in the run's card (when the folder has one)."""
    from safetensors.numpy import save_file

    layout = run_dir if isinstance(run_dir, RunLayout) else RunLayout(run_dir)
    summary = {
        p.name: {
            **p.summary(),
            "cross": sorted(p.cross),
            **({"acquisition": p.acquisition.to_json()} if p.acquisition is not None else {}),
        }
        for p in profiles
    }
    header = {"format": PROFILE_FORMAT, "model_sha256": model_sha256, "domains": summary}
    tensors = {f"centroid.{p.name}": np.ascontiguousarray(p.centroid) for p in profiles}
    for p in profiles:  # names are slugs without dots, so the keys are unambiguous
        for other, centroid in p.cross.items():
            tensors[f"cross.{p.name}.{other}"] = np.ascontiguousarray(centroid, dtype=np.float32)
    tensors["origin"] = np.ascontiguousarray(profiles[0].origin, dtype=np.float32)
    target = layout.profiles
    with atomic_path(target, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"profile": json.dumps(header)})
    note = {**header, "ood_threshold": OOD_THRESHOLD, "distance": "cosine, unit = p95"}
    with atomic_path(layout.profile_summary, overwrite=True) as tmp:
        tmp.write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
    if layout.card.is_file():  # a run folder: its card records the profiles' hash
        card = read_card(layout)
        write_card(layout, card.with_artifact(layout.relative(target), file_sha256(target)))
    return target


def read_profile(
    run_dir: Path | RunLayout, *, model_sha256: str, sha256: str | None = None
) -> dict[str, DomainProfile]:
    """The profiles stored in a run folder; :class:`ModelError` when absent, damaged or stale.

    ``sha256``: the profile file's hash as its card records it (default: read from the card);
    a mismatch is an :class:`~pedseg.errors.IntegrityError`. Profiles no card records (format 1
    cards, a folder without a card) are read unchecked."""
    from safetensors import SafetensorError, safe_open

    layout = run_dir if isinstance(run_dir, RunLayout) else RunLayout(run_dir)
    path = layout.profiles
    if not path.is_file():
        raise ProfileUnavailableError(
            f"{layout.root}: domain recognition is unavailable: the run has no {path.name} "
            "(trained before pedseg stored domain profiles); pass --domain NAME, or retrain"
        )
    if sha256 is None and layout.card.is_file():
        sha256 = read_card(layout).artifacts.get(layout.relative(path))
    if sha256 is not None:
        verify_sha256(path, sha256, recorded_in=layout.card, fix="delete it or retrain")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            header = json.loads((handle.metadata() or {})["profile"])
            arrays = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        out = {
            name: DomainProfile(
                name=name,
                centroid=np.asarray(arrays[f"centroid.{name}"], dtype=np.float32),
                origin=np.asarray(arrays["origin"], dtype=np.float32),
                **{k: float(s[k]) for k in ("mean", "std", "p95", "p99")},
                n_slices=int(s["n_slices"]),
                source=str(s.get("source", "training")),
                cross={
                    str(j): np.asarray(arrays[f"cross.{name}.{j}"], dtype=np.float32)
                    for j in s.get("cross", [])
                },
                acquisition=AcquisitionProfile.from_json(s["acquisition"])
                if "acquisition" in s
                else None,
            )
            for name, s in header["domains"].items()
        }
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc!r}); delete it or retrain") from exc
    if header.get("model_sha256") != model_sha256:
        raise ModelError(
            f"{path}: belongs to other weights than model.safetensors (stale); domain recognition "
            "is unavailable: pass --domain NAME, or retrain"
        )
    return out


def load_profiles(run: RunIndex) -> dict[str, DomainProfile]:
    """Every domain's profile of a run (a baseline run: from each member folder)."""
    out: dict[str, DomainProfile] = {}
    for name in run.domains:
        entry = run.entry(name)
        layout = entry.layout
        profiles = read_profile(
            layout,
            model_sha256=entry.model_sha256,
            sha256=entry.card.artifacts.get(layout.relative(layout.profiles)),
        )
        if name not in profiles:
            raise ModelError(
                f"{layout.profiles}: holds no profile of domain {name!r}; domain "
                "recognition is unavailable: pass --domain NAME, or retrain"
            )
        out[name] = profiles[name]
    return out


# ---------------------------------------------------------------------------------- embedding
def central_range(n: int, *, fraction: float = CENTRAL_FRACTION) -> tuple[int, int]:
    """``(start, stop)`` of the central ``fraction`` of ``n`` slices (at least one when n > 0)."""
    margin = int(n * (1.0 - fraction) / 2.0 + 1e-9)
    return (margin, n - margin) if n > 2 * margin else (0, n)


def embed_slices(embed: Embedder, images: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """``z`` of slices (N, H, W), L2-normalised: (N, D) float64."""
    parts: list[np.ndarray] = []
    for start in range(0, int(images.shape[0]), batch_size):
        block = np.ascontiguousarray(images[start : start + batch_size], dtype=np.float32)
        parts.append(np.asarray(embed(block[:, None]), dtype=np.float32))
    if not parts:
        raise ModelError("no slices to embed")
    return _unit(np.concatenate(parts))


def store_profile(
    run_dir: Path,
    slices: Mapping[str, np.ndarray],
    *,
    carry: Mapping[str, DomainProfile] | None = None,
    cross: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    acquisition: Mapping[str, AcquisitionProfile | None] | None = None,
    source: str = "training",
    device: torch.device | None = None,
) -> Path | None:
    """Profile the run ``run_dir``'s stored weights on ``slices`` per domain and write them, with
    the ``carry`` profiles of the other domains. ``cross[k][j]``: domain ``j``'s slices preprocessed
    as ``k`` (:func:`cross_slices`), giving the cross centroid ``c_kj`` of ``k``'s profile (added to
    those it carries). ``acquisition``: the new profiles' training-scan summaries (a profiled
    domain without one keeps the one it carries). Skipped (``None``, logged) without weights."""
    from pedseg.runfolder.loading import load_run, numpy_embedder

    layout = RunLayout(run_dir)
    if not layout.card.is_file():
        logger.info("%s: no model was saved; no domain profile written", run_dir)
        return None
    run = load_run(layout)
    profiles: dict[str, DomainProfile] = dict(carry or {})
    embedded: dict[str, np.ndarray] = {}
    for name, images in slices.items():
        model = run.domain(name)
        if model.embed is None:
            logger.info("%s: domain %s has no embedding; no profile written", run_dir, name)
            return None
        if device is not None:
            model.module.to(device)
        embedded[name] = embed_slices(numpy_embedder(model), images)
    if profiles:  # the new domains live in the carried domains' space: keep its origin
        origin = next(iter(profiles.values())).origin
    else:
        origin = shared_origin(list(embedded.values()))
    for name, z in embedded.items():
        kept = profiles.get(name)
        summary = (acquisition or {}).get(name) or (kept.acquisition if kept else None)
        profiles[name] = replace(
            profile_from_embeddings(name, z, origin=origin, source=source),
            cross=dict(kept.cross) if kept else {},
            acquisition=summary,
        )
    for space, by_domain in (cross or {}).items():
        if space not in profiles or space not in run.domains:
            continue
        model = run.domain(space)
        if model.embed is None:
            continue
        extra = dict(profiles[space].cross)
        for other, images in by_domain.items():
            if other != space and images.shape[0] > 0:
                z = embed_slices(numpy_embedder(model), images)
                unit = _unit(_unit(z) - origin)
                extra[other] = _unit(unit.mean(axis=0)).astype(np.float32)
        profiles[space] = replace(profiles[space], cross=extra)
    missing = [name for name in run.domains if name not in profiles]
    if missing:
        logger.info("%s: no profile of domain %s; recognition unavailable", run_dir, missing[0])
        return None
    ordered = [profiles[name] for name in run.domains]
    sha = run.domain(run.domains[0]).model_sha256
    path = write_profile(layout, ordered, model_sha256=sha)
    logger.info("wrote the domain profiles of %s to %s", ", ".join(run.domains), path)
    return path


# ---------------------------------------------------------------------------------- recognition


def even_picks(n: int, count: int) -> np.ndarray:
    """``count`` evenly spaced slice indices from the central part of ``n`` slices."""
    lo, hi = central_range(n)
    count = min(count, hi - lo)
    return lo + ((2 * np.arange(count) + 1) * (hi - lo)) // (2 * count)


def cross_slices(
    specs: Sequence[DomainSpec],
    volumes: Iterable[tuple[str, Volume]],
    *,
    image_size: tuple[int, int],
    per_case: int = CROSS_SLICES_PER_CASE,
) -> dict[str, dict[str, np.ndarray]]:
    """``out[k][j]``: slices of domain ``j``'s scans (``volumes``: ``(j, scan)`` pairs, consumed
    one at a time) preprocessed as domain ``k`` (``k``'s slice axis and normalisation),
    ``per_case`` evenly spaced slices from the central part of each scan, for every pair
    ``k != j`` of ``specs``."""
    from pedseg.data.preprocess import prepare_volume, slice_count

    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    for name, volume in volumes:
        for spec in specs:
            if spec.name == name:
                continue
            picks = even_picks(slice_count(volume, spec), per_case)
            stack = prepare_volume(volume, spec, image_size=image_size, picks=picks).images
            parts.setdefault((spec.name, name), []).append(np.asarray(stack, dtype=np.float32))
    out: dict[str, dict[str, np.ndarray]] = {spec.name: {} for spec in specs}
    for (space, name), slices in parts.items():
        out[space][name] = np.concatenate(slices)
    return out
