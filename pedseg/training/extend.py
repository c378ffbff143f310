"""Adding a domain to a trained DSBN model: train only the new domain's batch norms and head.

``extend_run(RUN, spec)`` appends a domain to the run's network (``add_domain(init="mean")``: its
batch-norm sets start from the mean of the existing domains'), freezes everything else and trains on
the new domain's data into a NEW run folder (default ``RUN-plus-<domain>``; ``RUN`` is never
modified) that segments the old domains and the new one. Only ``dsl``/``dsl-contrastive`` runs.

Freezing: ``requires_grad`` is False everywhere except the new domain's batch-norm affine parameters
(in every :class:`~pedseg.models.dsbn.DomainBatchNorm2d`) and its head, the only parameters the
optimizer gets. The network runs in eval mode except the new domain's batch norms (train mode: their
running statistics follow the new data), so the old domains' outputs stay bit-identical.

Loss: Eq. 2 cross-entropy on the new domain only (plus the soft Dice term with
``seg_loss="dice-ce"``). The contrastive term (Eq. 3) needs two domains in
a batch (and the old domains' data); with the shared encoder frozen it could only move the new
batch norms, so it is not used. Per epoch, with the training package's sampler, augmentation and
validation: balanced batches of the new domain, validation Dice on its held-out cases, ``latest``
and ``best`` checkpoints, ``model.safetensors`` + ``model.json`` on improvement, ``metrics.csv``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pedseg import __version__
from pedseg.data.augment import AugmentConfig
from pedseg.data.sampler import BalancedSampler
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ModelError, TrainingError
from pedseg.inference.profiles import (
    cross_slices,
    read_profile,
    store_profile,
    training_slices,
)
from pedseg.inference.runs import load_run
from pedseg.io.atomic import atomic_path
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.models.unet import MultiDomainUNet
from pedseg.training.artifacts import (
    file_sha256,
    plot_curves,
    set_last_run,
    write_json,
    write_metrics_csv,
)
from pedseg.training.base_run import (
    base_network,
    check_extendable,
    check_new_output,
    read_card,
)
from pedseg.training.checkpoint import save_checkpoint, state_tensors
from pedseg.training.config import TrainConfig
from pedseg.training.events import EventKind, TrainEvent, TrainResult
from pedseg.training.prepare import DomainData, LabelMapping, prepare_domains, training_images
from pedseg.training.resume import RunState
from pedseg.training.runtime import configure_threads, resolve_device, seed_everything
from pedseg.training.step import compute_losses, gather_batch, to_device
from pedseg.training.validate import validate

__all__ = [
    "ExtendConfig",
    "check_extendable",
    "extend_run",
    "extension_mode",
    "freeze_for_extension",
]

logger = logging.getLogger(__name__)
VALIDATION_BATCH = 16
Callback = Callable[[TrainEvent], None]


@dataclass(frozen=True)
class ExtendConfig:
    """How the new domain is trained (architecture and image size come from the base run); the
    fields mean what they mean in :class:`~pedseg.training.config.TrainConfig`."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    steps_per_epoch: int | None = None
    val_fraction: float = 0.2
    val_cases: tuple[str, ...] = ()
    fg_fraction: float = 1 / 3
    augment: bool = True
    device: str = "auto"
    seg_loss: str = "ce"

    def __post_init__(self) -> None:
        object.__setattr__(self, "val_cases", tuple(self.val_cases))
        self.train_config("domain")  # TrainConfig validates every shared field

    def train_config(
        self, domain: str, *, image_size: tuple[int, int] | None = None
    ) -> TrainConfig:
        """The equivalent single-domain ``dsl`` training config (for the shared data pieces)."""
        return TrainConfig(
            domains=(domain,),
            scheme="dsl",
            epochs=self.epochs,
            batch_size=self.batch_size,
            image_size=image_size,
            lr=self.lr,
            seed=self.seed,
            device=self.device,
            steps_per_epoch=self.steps_per_epoch,
            val_fraction=self.val_fraction,
            val_cases=((domain, self.val_cases),) if self.val_cases else (),
            fg_fraction=self.fg_fraction,
            augment=self.augment,
            seg_loss=self.seg_loss,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, without case ids (for ``model.json``)."""
        out = asdict(self)
        del out["val_cases"]
        return out


# ---------------------------------------------------------------------- freezing
def freeze_for_extension(net: MultiDomainUNet, domain: int) -> list[nn.Parameter]:
    """Freeze everything but ``domain``'s batch-norm affine parameters and head; return those."""
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    for module in net.modules():
        if isinstance(module, DomainBatchNorm2d):
            trainable.extend(module.bns[domain].parameters())
    if not trainable:
        raise ModelError("the network has no domain-specific batch norm (DSBN) to train")
    trainable.extend(net.heads.heads[domain].parameters())
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def extension_mode(net: MultiDomainUNet, domain: int) -> None:
    """Eval mode everywhere except ``domain``'s batch norms (train mode: running stats update)."""
    net.eval()
    for module in net.modules():
        if isinstance(module, DomainBatchNorm2d):
            module.bns[domain].train()


# ---------------------------------------------------------------------- the run
def extend_run(
    base: Path | None,
    spec: DomainSpec,
    *,
    config: ExtendConfig | None = None,
    out: Path | None = None,
    cache_root: Path | None = None,
    callback: Callback | None = None,
) -> TrainResult:
    """Add ``spec``'s domain to the run ``base`` into the new run folder ``out``; see the module doc."""
    config = config if config is not None else ExtendConfig()
    root, card = read_card(base)
    check_extendable(card, root, spec.name)
    out = Path(out) if out is not None else root.parent / f"{root.name}-plus-{spec.name}"
    check_new_output(out)
    run = load_run(root)
    net = base_network(run)
    image_size = (int(card["image_size"][0]), int(card["image_size"][1]))
    configure_threads()
    device = resolve_device(config.device)
    train_config = config.train_config(spec.name, image_size=image_size)
    (data,) = prepare_domains(train_config, [spec], cache_root=cache_root, image_size=image_size)
    seed_everything(config.seed)
    index = net.add_domain(spec.num_classes, init="mean")
    mapping = LabelMapping(
        domain=spec.name,
        head=index,
        classes={label: j + 1 for j, label in enumerate(spec.label_ids)},
        num_classes=spec.num_classes,
    )
    data = replace(data, index=index, mapping=mapping)
    net.to(device)
    trainable = freeze_for_extension(net, index)
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    sampler = BalancedSampler(
        [data.pool], batch_size=config.batch_size, seed=config.seed, fg_fraction=config.fg_fraction
    )
    steps = config.steps_per_epoch or sampler.default_steps_per_epoch()
    out.mkdir(parents=True, exist_ok=True)
    job = _Job(config, card, spec, data, net, optimizer, device, out, callback, RunState())
    state = job.state
    job.emit("run_start", epoch=1, steps=steps)
    try:
        for epoch in range(1, config.epochs + 1):
            _run_epoch(job, sampler, epoch, steps)
    finally:
        if state.history:
            plot_curves(out / "curves.png", state.history)
    old_specs = [run.domain(name).spec for name in run.domains]
    _store_profile(root, card, out, data, device, old_specs=old_specs, image_size=image_size)
    set_last_run(out)
    job.emit("run_end", epoch=state.epoch, steps=steps)
    history = tuple(state.history)
    return TrainResult(out, state.epoch, state.best_epoch, state.best_metric, history=history)


def _store_profile(
    root: Path,
    card: Mapping[str, Any],
    out: Path,
    data: DomainData,
    device: torch.device,
    *,
    old_specs: Sequence[DomainSpec],
    image_size: tuple[int, int],
) -> None:
    """Carry the base run's domain profiles (the old domains' embeddings are unchanged), add the
    new domain's cross centroid to each, and profile the new domain (without cross centroids: the
    old domains' scans are not at hand); without base profiles, recognition stays unavailable."""
    try:
        carried = read_profile(root, model_sha256=str(card.get("model_sha256")))
    except ModelError as exc:
        logger.info("no domain profile for %s: %s", out, exc)
        return
    slices = {data.spec.name: training_slices(data, seed=0)}
    specs = [*old_specs, data.spec]
    cross = cross_slices(specs, training_images([data]), image_size=image_size)
    store_profile(out, slices, carry=carried, cross=cross, source="extension", device=device)


@dataclass
class _Job:
    config: ExtendConfig
    card: dict[str, Any]
    spec: DomainSpec
    data: DomainData
    net: MultiDomainUNet
    optimizer: torch.optim.Optimizer
    device: torch.device
    out: Path
    callback: Callback | None
    state: RunState

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if self.callback is not None:
            step = self.state.global_step
            self.callback(TrainEvent(kind, epochs=self.config.epochs, global_step=step, **fields))


def _run_epoch(job: _Job, sampler: BalancedSampler, epoch: int, steps: int) -> None:
    config, index, state = job.config, job.data.index, job.state
    augment = AugmentConfig() if config.augment else None
    extension_mode(job.net, index)
    job.emit("epoch_start", epoch=epoch, steps=steps)
    sums = torch.zeros(3, dtype=torch.float64)  # ce, dice, total
    started = time.perf_counter()
    for step in range(1, steps + 1):
        step_start = time.perf_counter()
        host = gather_batch([job.data], sampler.batch(epoch, step))
        route = [(index, count) for _, count in host.chunks]
        images, targets = to_device(
            host,
            device=job.device,
            channels_last=False,
            augment=augment,
            global_size=config.batch_size,
            seed=config.seed,
            epoch=epoch,
            step=step,
        )
        terms = compute_losses(
            job.net,
            images,
            targets,
            route,
            scheme="dsl",
            tau=0.1,
            lam=0.0,
            seg_loss=config.seg_loss,
        )
        ce, dice, loss = (float(v) for v in terms.stacked()[[0, 3, 2]])
        if not math.isfinite(loss):
            raise TrainingError(
                f"non-finite loss at epoch {epoch}, step {step} while adding domain "
                f"{job.spec.name!r}; lower the learning rate (lr={config.lr}) or check its data"
            )
        job.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        job.optimizer.step()
        state.global_step += 1
        sums += torch.tensor([ce, dice, loss], dtype=torch.float64)
        seconds = max(time.perf_counter() - step_start, 1e-9)
        losses = {"ce": ce, "contrastive": 0.0, "total": loss}
        if config.seg_loss == "dice-ce":
            losses["dice"] = dice
        job.emit(
            "step",
            epoch=epoch,
            step=step,
            steps=steps,
            losses=losses,
            slices_per_s=config.batch_size / seconds,
        )
    train_seconds = max(time.perf_counter() - started, 1e-9)
    means = (sums / steps).tolist()
    _finish_epoch(job, epoch, steps, means=means, started=started, train_s=train_seconds)


def _finish_epoch(
    job: _Job, epoch: int, steps: int, *, means: list[float], started: float, train_s: float
) -> None:
    state = job.state
    metrics = validate(job.net, [job.data], device=job.device, batch_size=VALIDATION_BATCH)
    extension_mode(job.net, job.data.index)
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": state.global_step,
        "loss_ce": means[0],
        "loss_dice": means[1],
        "loss_contrastive": 0.0,
        "loss_total": means[2],
        **metrics,
        "lr": float(job.optimizer.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - started,
        "slices_per_s": steps * job.config.batch_size / train_s,
    }
    state.history.append(row)
    state.epoch = epoch
    is_best = metrics["val_dice"] >= state.best_metric  # ties: later epoch
    if is_best:
        state.best_metric, state.best_epoch = metrics["val_dice"], epoch
    _write_epoch(job, is_best=is_best)
    dice, note = metrics["val_dice"], " (best)" if is_best else ""
    logger.info("extension epoch %d: loss %.4f, val Dice %.4f%s", epoch, means[2], dice, note)
    job.emit("epoch_end", epoch=epoch, steps=steps, metrics=dict(row), is_best=is_best)


def _write_epoch(job: _Job, *, is_best: bool) -> None:
    out, state = job.out, job.state
    payload = {
        "pedseg_version": __version__,
        "epoch": state.epoch,
        "global_step": state.global_step,
        "best_metric": state.best_metric if state.best_epoch else None,
        "best_epoch": state.best_epoch,
        "history": state.history,
        "extension": {"domain": job.spec.name, **job.config.to_dict()},
        "base_model_sha256": job.card.get("model_sha256"),
    }
    for name in ("latest", "best") if is_best else ("latest",):
        save_checkpoint(
            out / "checkpoints" / name, model=job.net, optimizer=job.optimizer, state=payload
        )
    if is_best:
        weights = out / "model.safetensors"
        with atomic_path(weights) as tmp:
            save_file(state_tensors(job.net), str(tmp))
        write_json(out / "model.json", extended_card(job, file_sha256(weights)))
    write_metrics_csv(out / "metrics.csv", state.history)


def extended_card(job: _Job, sha256: str) -> dict[str, Any]:
    """The base run's ``model.json`` with the new domain appended (no case ids, no paths)."""
    base, spec, mapping = job.card, job.spec, job.data.mapping
    card = dict(base)
    card["pedseg_version"] = __version__
    card["num_classes"] = [*base["num_classes"], mapping.num_classes]
    card["domains"] = [*base["domains"], spec.name]
    card["descriptors"] = {**base["descriptors"], spec.name: spec.to_dict(include_data=False)}
    card["descriptor_hashes"] = {**base["descriptor_hashes"], spec.name: spec.content_hash()}
    card["label_mapping"] = {**base["label_mapping"], spec.name: mapping.to_dict()}
    card["training"] = {
        "base_model_sha256": base.get("model_sha256"),
        "base": base.get("training"),
        "extension": {"domain": spec.name, **job.config.to_dict()},
    }
    card.update(best_epoch=job.state.best_epoch, best_metric=job.state.best_metric)
    card["model_sha256"] = sha256
    card["extended_from"] = {"model_sha256": base.get("model_sha256"), "domain": spec.name}
    return card
