"""Unsupervised adaptation to a new site: re-estimate one domain's batch-norm statistics.

A scanner, coil or protocol change shifts intensities and contrast; with domain-specific batch norm
(DSBN) the shift shows up as wrong running statistics (mean, variance) of that domain's norm layers.
:func:`adapt_bn` re-estimates them on unlabelled scans of the new site (AdaBN, Li et al. 2016): every
scan is read with :mod:`pedseg.io` and preprocessed exactly as in training
(:func:`~pedseg.data.preprocess.prepare_volume`: slice axis, resize to the run's image size, the
domain's normalisation), and all its slices are passed through the network with only that domain's
batch norms in train mode, their statistics reset and ``momentum=None`` (a cumulative average over
the batches). The affine parameters (weight, bias), every other domain and every shared weight are
untouched, so the result is a NEW run folder (default ``RUN-adapted-<domain>``) that differs from the
base run only in that domain's ``running_mean``, ``running_var`` and ``num_batches_tracked``.

Slices are shuffled (seeded) over all scans and split into ``max(1, N // batch_size)`` batches of
nearly equal size (between ``batch_size`` and ``2 * batch_size - 1`` slices), so that every batch
weighs the same in the cumulative average and looks like a training batch (slices of mixed
positions). All slices are held in memory at the network's size (``N * H * W * 4`` bytes).

It helps with intensity and contrast shifts between scanners of the same anatomy; it cannot fix
anatomy, field-of-view or resolution changes (those need labelled data: :mod:`pedseg.training.extend`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pedseg import __version__
from pedseg.data.preprocess import prepare_volume
from pedseg.data.sampler import seeded_rng
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DatasetError, ModelError
from pedseg.io import is_volume_path, read_volume
from pedseg.io.atomic import make_folder, output_errors
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.models.unet import MultiDomainUNet
from pedseg.runfolder.acquisition import AcquisitionSummary
from pedseg.runfolder.card import ModelCard
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.loading import load_run
from pedseg.runfolder.pointer import set_last_run
from pedseg.runfolder.profiles import central_range, read_profile, store_profile
from pedseg.runfolder.writer import save_model
from pedseg.runtime import configure_threads, resolve_device
from pedseg.training.base_run import check_dsbn, check_new_output, read_base

__all__ = ["AdaptReport", "adapt_bn", "collect_scans", "load_slices", "reestimate_bn"]

logger = logging.getLogger(__name__)
_ADAPT_STREAM = 0xADA


@dataclass(frozen=True)
class AdaptReport:
    """An adapted run: where it is and what it was adapted on."""

    run_dir: Path
    domain: str
    n_scans: int
    n_slices: int
    model_sha256: str
    from_model_sha256: str
    seconds: float


def collect_scans(inputs: Sequence[Path]) -> list[Path]:
    """Volume files and DICOM folders; a folder of volume files gives its files (sorted)."""
    if not inputs:
        raise ConfigError("give at least one unlabelled scan (a volume file or a DICOM folder)")
    scans: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir() and not is_volume_path(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and is_volume_path(p))
            if not found:
                raise DatasetError(
                    f"{path}: holds no volume files (.nii.gz, .mha, .nrrd, ...) and is not a "
                    "DICOM series folder; pass the scans themselves"
                )
            scans.extend(found)
        else:
            scans.append(path)
    return scans


def load_slices(
    scans: Sequence[Path],
    spec: DomainSpec,
    *,
    image_size: tuple[int, int],
    summary: AcquisitionSummary | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Every slice of every scan, preprocessed as in training: ``(N, H, W)`` float32, counts
    (each scan also added to ``summary``, the new site's acquisition summary)."""
    stacks: list[np.ndarray] = []
    counts: list[int] = []
    for scan in scans:
        volume = read_volume(scan)
        if summary is not None:
            summary.add(volume)
        stack = prepare_volume(volume, spec, image_size=image_size)
        stacks.append(stack.images)
        counts.append(stack.num_slices)
    return np.concatenate(stacks).astype(np.float32, copy=False), counts


def _domain_bns(net: MultiDomainUNet, domain: int) -> list[torch.nn.BatchNorm2d]:
    bns = [m.bns[domain] for m in net.modules() if isinstance(m, DomainBatchNorm2d)]
    if not bns:
        raise ModelError("the network has no domain-specific batch norm (DSBN) to adapt")
    return bns  # type: ignore[return-value]


@torch.no_grad()
def reestimate_bn(
    net: MultiDomainUNet,
    domain: int,
    slices: np.ndarray,
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
    seed: int = 0,
) -> int:
    """Recompute ``domain``'s batch-norm running statistics on ``slices`` (N, H, W); see the module
    doc. Returns the number of batches. The network is left in eval mode."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise ConfigError(f"batch_size must be an integer >= 2, got {batch_size!r}")
    count = int(slices.shape[0])
    if slices.ndim != 3 or count < 2:
        raise DatasetError(
            f"adapting needs at least 2 slices (N, H, W), got shape {tuple(slices.shape)}; "
            "give more scans"
        )
    device = device if device is not None else next(net.parameters()).device
    bns = _domain_bns(net, domain)
    momenta = [bn.momentum for bn in bns]
    order = seeded_rng(_ADAPT_STREAM, seed, count).permutation(count)
    parts = np.array_split(order, max(1, count // batch_size))
    net.eval()
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the batches
            bn.train()
        for part in parts:
            block = torch.from_numpy(np.ascontiguousarray(slices[np.sort(part)]))
            net.forward_domain(block[:, None].to(device), domain)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        net.eval()
    return len(parts)


def adapt_bn(
    base: Path | None,
    domain: str,
    scans: Sequence[Path],
    *,
    out: Path | None = None,
    batch_size: int = 32,
    device: str = "auto",
    seed: int = 0,
) -> AdaptReport:
    """Write a copy of the run ``base`` with ``domain``'s BN statistics re-estimated on ``scans``."""
    started = time.perf_counter()
    layout, card = read_base(base)
    root = layout.root
    check_dsbn(card, root, action="adapt the batch norms of")
    out = Path(out) if out is not None else root.parent / f"{root.name}-adapted-{domain}"
    check_new_output(out)
    paths = collect_scans(scans)
    run = load_run(layout)
    model = run.domain(domain)  # UnknownNameError for a domain the model does not have
    net = run.network()
    head = getattr(model.module, "head", None)
    if not isinstance(head, int):
        raise ModelError(f"{root}: cannot find the batch-norm index of domain {domain!r}")
    configure_threads()
    torch_device = resolve_device(device)
    summary = AcquisitionSummary(model.spec)
    slices, counts = load_slices(paths, model.spec, image_size=model.image_size, summary=summary)
    net.to(torch_device)
    batches = reestimate_bn(
        net, head, slices, batch_size=batch_size, device=torch_device, seed=seed
    )
    logger.info(
        "re-estimated %s's BN statistics on %d slices (%d batches)", domain, len(slices), batches
    )
    record: dict[str, Any] = {
        "domain": domain,
        "n_scans": len(paths),
        "n_slices": int(sum(counts)),
        "from_model_sha256": model.model_sha256,
    }
    if card.adapted is not None:
        record["previous"] = dict(card.adapted)
    sha = _write_run(out, net, card, record)
    _store_profile(layout, model.model_sha256, out, domain, slices, counts, summary)
    set_last_run(out)
    return AdaptReport(
        run_dir=out,
        domain=domain,
        n_scans=len(paths),
        n_slices=int(sum(counts)),
        model_sha256=sha,
        from_model_sha256=model.model_sha256,
        seconds=time.perf_counter() - started,
    )


def _store_profile(
    root: RunLayout,
    base_sha: str,
    out: Path,
    domain: str,
    slices: np.ndarray,
    counts: list[int],
    summary: AcquisitionSummary,
) -> None:
    """Carry the other domains' profiles and re-profile ``domain`` (its batch-norm statistics, so
    its embedding, changed) on the central 80 % of the adaptation scans' slices; its acquisition
    summary is the new site's scans', with the label volumes of its training cases (the
    adaptation scans have no labels)."""
    try:
        carried = read_profile(root, model_sha256=base_sha)
    except ModelError as exc:
        logger.warning("no domain profile for %s: %s", out, exc)
        return
    starts = np.cumsum([0, *counts])
    picks = [
        np.arange(start + lo, start + hi)
        for start, n in zip(starts[:-1], counts, strict=True)
        for lo, hi in [central_range(n)]
    ]
    carry = {name: p for name, p in carried.items() if name != domain}
    chosen = {domain: slices[np.concatenate(picks)]}
    site = summary.profile()
    old = carried[domain].acquisition if domain in carried else None
    if site is not None and old is not None:
        site = replace(site, label_ml=old.label_ml, foreground_ml=old.foreground_ml)
    store_profile(out, chosen, carry=carry, acquisition={domain: site}, source="adaptation")


def _write_run(out: Path, net: MultiDomainUNet, card: ModelCard, record: dict[str, Any]) -> str:
    """Write the weights and card into a temporary folder renamed to ``out``."""
    make_folder(out.parent)
    with output_errors(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        adapted = replace(card, pedseg_version=__version__, adapted=record, artifacts={})
        written = save_model(RunLayout(tmp), net, adapted)
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        check_new_output(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written.model_sha256
