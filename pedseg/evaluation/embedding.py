"""Bottleneck embeddings of training and validation slices, and their t-SNE map (paper Fig. 4).

The embedding of a slice is the model's own ``z``: global max pooling of the bottleneck computed with
the slice's domain-specific batch norm (:meth:`MultiDomainUNet.embed`). Slices come from the
domain's slice cache (the exact preprocessing training used, at the run's image size). Which cases
were validation cases is read from the run's private checkpoint state
(``checkpoints/latest/state.json``, ``val_cases``); without it every case counts as training.

Epoch snapshots: training keeps only ``checkpoints/latest`` and ``checkpoints/best`` (no per-epoch
copies), so :func:`list_snapshots` returns whichever checkpoint folders exist (any
``checkpoints/<name>/`` with a ``state.json``), one per distinct epoch, in epoch order.

Projection (:func:`project_tsne`), as in the paper: PCA to ``min(50, n, d)`` dimensions, then t-SNE
to 2D with perplexity ``min(30, (n - 1) / 3)`` and learning rate 200, ``random_state = seed``. t-SNE
runs on one thread, so the map depends on the inputs and the seed only (not on the thread count;
about a minute for a few thousand slices).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError, PedsegError
from pedseg.evaluation.plots import EmbeddingPanel
from pedseg.runfolder import RunLayout
from pedseg.runfolder.card import ModelCard
from pedseg.runfolder.loading import LoadedRun, load_run

__all__ = [
    "EmbedOptions",
    "Embeddings",
    "Snapshot",
    "collect_embeddings",
    "coordinates_csv",
    "list_snapshots",
    "project_tsne",
    "snapshot_embeddings",
    "tsne_panels",
    "validation_cases",
]

logger = logging.getLogger(__name__)
Embedder = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class EmbedOptions:
    """``max_slices``: per domain, a seeded random subset (``None``: every slice)."""

    max_slices: int | None = None
    seed: int = 0
    batch_size: int = 64
    cache_root: Path | None = None

    def __post_init__(self) -> None:
        if self.max_slices is not None and self.max_slices < 1:
            raise ConfigError(f"max_slices must be >= 1, got {self.max_slices}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True, eq=False)
class Embeddings:
    """``vectors`` (n, d) float32 with, per row, its domain, case, slice index and split."""

    title: str
    vectors: np.ndarray
    domains: np.ndarray
    cases: np.ndarray
    slices: np.ndarray
    validation: np.ndarray
    epoch: int | None = None


@dataclass(frozen=True)
class Snapshot:
    name: str
    path: Path
    epoch: int


def validation_cases(checkpoint: Path) -> dict[str, tuple[str, ...]] | None:
    """``val_cases`` of a checkpoint folder's ``state.json`` (``None`` when absent or unreadable)."""
    from pedseg.runfolder.checkpoint import find_checkpoint, read_state

    found = find_checkpoint(checkpoint)
    if found is None:
        return None
    try:
        raw = read_state(found).get("val_cases")
    except PedsegError as exc:
        logger.warning("%s; every case counts as training", exc)
        return None
    if not isinstance(raw, dict):
        return None
    return {str(k): tuple(str(c) for c in v) for k, v in raw.items() if isinstance(v, list)}


def _run_validation(run: LoadedRun, domain: str) -> tuple[str, ...] | None:
    layout = run.domain(domain).layout or run.layout
    cases = validation_cases(layout.checkpoint("latest"))
    return None if cases is None else cases.get(domain, ())


def _with_data(stored: DomainSpec, data: Mapping[str, DomainSpec]) -> DomainSpec:
    given = data.get(stored.name)
    return stored if given is None or given.data is None else replace(stored, data=given.data)


def _embed_domain(
    embed: Embedder,
    spec: DomainSpec,
    *,
    image_size: tuple[int, int],
    val_cases: tuple[str, ...] | None,
    options: EmbedOptions,
) -> dict[str, np.ndarray]:
    from pedseg.data.cache import build_cache

    cache = build_cache(spec, cache_root=options.cache_root, image_size=image_size)
    case_of = np.empty(len(cache), dtype=object)
    slice_of = np.zeros(len(cache), dtype=np.int64)
    for case in cache.cases:
        case_of[case.start : case.stop] = case.case_id
        slice_of[case.start : case.stop] = np.arange(case.num_slices)
    indices = np.arange(len(cache), dtype=np.int64)
    if options.max_slices is not None and indices.size > options.max_slices:
        rng = np.random.default_rng([options.seed, zlib.crc32(spec.name.encode("utf-8"))])
        indices = np.sort(rng.choice(indices, size=options.max_slices, replace=False))
    vectors: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, indices.size, options.batch_size):
            batch = np.asarray(cache.images[indices[start : start + options.batch_size]])
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
            vectors.append(embed(x).detach().to("cpu", torch.float32).numpy())
    if val_cases is None:
        logger.info("%s: no validation cases recorded; every slice counts as training", spec.name)
    cases = case_of[indices].astype(str)
    return {
        "vectors": np.concatenate(vectors, axis=0),
        "domains": np.full(indices.size, spec.name),
        "cases": cases,
        "slices": slice_of[indices],
        "validation": np.isin(cases, list(val_cases or ())),
    }


def _stack(title: str, parts: Sequence[dict[str, np.ndarray]], epoch: int | None) -> Embeddings:
    keys = ("vectors", "domains", "cases", "slices", "validation")
    merged = {k: np.concatenate([p[k] for p in parts], axis=0) for k in keys}
    return Embeddings(title=title, epoch=epoch, **merged)


def _domains(run: LoadedRun, domains: Sequence[str] | None) -> list[str]:
    names = list(domains) if domains else list(run.domains)
    for name in names:
        run.domain(name)  # UnknownNameError for a domain the model does not have
    return names


def collect_embeddings(
    run: LoadedRun,
    data: Mapping[str, DomainSpec],
    *,
    domains: Sequence[str] | None = None,
    options: EmbedOptions | None = None,
) -> Embeddings:
    """Embeddings of every (or ``max_slices``) slice of ``domains`` (default: the model's) with
    the final model; ``data`` gives each domain's data folder (``spec.data``)."""
    options = options or EmbedOptions()
    parts = []
    for name in _domains(run, domains):
        model = run.domain(name)
        if model.embed is None:
            raise ModelError(f"{run.path}: the model of domain {name!r} exposes no embedding")
        spec = _with_data(model.spec, data)
        val = _run_validation(run, name)
        parts.append(
            _embed_domain(
                model.embed, spec, image_size=model.image_size, val_cases=val, options=options
            )
        )
    epoch = run.card.weights_epoch if run.card.kind == "model" else None
    title = f"{run.path.name} (epoch {epoch})" if epoch is not None else run.path.name
    return _stack(title, parts, epoch)


def list_snapshots(run_dir: Path) -> list[Snapshot]:
    """The checkpoint folders of a run (one per distinct epoch, in epoch order)."""
    from pedseg.runfolder.checkpoint import list_checkpoints, read_state

    found: dict[int, Snapshot] = {}
    for name, path in list_checkpoints(RunLayout(run_dir)):
        epoch = int(read_state(path).get("epoch", 0))
        found.setdefault(epoch, Snapshot(name=name, path=path, epoch=epoch))
    return [found[e] for e in sorted(found)]


def _snapshot_embedder(card: ModelCard, snapshot: Snapshot, head: int) -> Embedder:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from pedseg.models.build import build_model
    from pedseg.runfolder.checkpoint import checkpoint_weights

    weights = checkpoint_weights(snapshot.path)
    if card.model is None:
        raise ModelError(f"{snapshot.path}: the run's card holds no model configuration")
    try:
        net = build_model(card.model, num_classes=list(card.num_classes))
        net.load_state_dict(load_file(str(weights), device="cpu"), strict=True)
    except (PedsegError, KeyError, SafetensorError, RuntimeError, OSError, TypeError) as exc:
        raise ModelError(f"{weights}: cannot be loaded into the run's model: {exc}") from exc
    net = net.float().eval()

    def embed(x: Tensor) -> Tensor:
        return net.embed(x, head)

    return embed


def snapshot_embeddings(
    run_dir: Path,
    data: Mapping[str, DomainSpec],
    *,
    domains: Sequence[str] | None = None,
    options: EmbedOptions | None = None,
) -> list[Embeddings]:
    """:func:`collect_embeddings` for each checkpoint snapshot of a single-model run."""
    options = options or EmbedOptions()
    run = load_run(run_dir)
    if run.card.kind != "model":
        raise ModelError(
            f"{run.path}: epoch snapshots need one shared model; a {run.card.kind} run "
            "has one model per domain: pass a dsl, dsl-contrastive or joint run to --epochs-from"
        )
    snapshots = list_snapshots(run.path)
    if not snapshots:
        raise ModelError(
            f"{run.layout.checkpoint().parent}: no checkpoint snapshot found; the run has none left"
        )
    names = _domains(run, domains)
    out = []
    for snapshot in snapshots:
        val = validation_cases(snapshot.path) or {}
        parts = []
        for name in names:
            model = run.domain(name)
            head = run.card.label_mapping[name].head
            parts.append(
                _embed_domain(
                    _snapshot_embedder(run.card, snapshot, head),
                    _with_data(model.spec, data),
                    image_size=model.image_size,
                    val_cases=val.get(name) if val else None,
                    options=options,
                )
            )
        title = f"epoch {snapshot.epoch} ({snapshot.name})"
        out.append(_stack(title, parts, snapshot.epoch))
    return out


def project_tsne(
    vectors: np.ndarray, *, seed: int = 0, perplexity: float = 30.0, learning_rate: float = 200.0
) -> np.ndarray:
    """PCA to ``min(50, n, d)`` dims then t-SNE to 2D (``(n, 2)`` float64); see the module doc."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    data = np.asarray(vectors, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 4:
        raise ConfigError(
            f"t-SNE needs at least 4 embeddings of shape (n, d), got {data.shape}; "
            "raise --max-slices or add cases"
        )
    if not np.all(np.isfinite(data)):
        raise ConfigError("embeddings hold non-finite values; the model weights are broken")
    n, d = data.shape
    components = min(50, n, d)
    tsne = TSNE(
        n_components=2,
        perplexity=min(perplexity, (n - 1) / 3),
        learning_rate=learning_rate,
        init="pca",
        random_state=seed,
    )
    with threadpool_limits(limits=1):
        reduced = PCA(n_components=components, svd_solver="full", random_state=seed).fit_transform(
            data
        )
        return np.asarray(tsne.fit_transform(reduced), dtype=np.float64)


def tsne_panels(embeddings: Sequence[Embeddings], *, seed: int = 0) -> list[EmbeddingPanel]:
    """One t-SNE :class:`EmbeddingPanel` per set of embeddings."""
    return [
        EmbeddingPanel(
            title=e.title,
            coords=project_tsne(e.vectors, seed=seed),
            domains=e.domains,
            validation=e.validation,
        )
        for e in embeddings
    ]


def coordinates_csv(embeddings: Embeddings, coords: np.ndarray) -> str:
    """``domain,case,slice,split,x,y`` per slice (the points of a t-SNE panel)."""
    lines = ["domain,case,slice,split,x,y"]
    for i in range(coords.shape[0]):
        split = "validation" if embeddings.validation[i] else "training"
        lines.append(
            f"{embeddings.domains[i]},{embeddings.cases[i]},{int(embeddings.slices[i])},{split},"
            f"{float(coords[i, 0])!r},{float(coords[i, 1])!r}"
        )
    return "\n".join(lines) + "\n"
