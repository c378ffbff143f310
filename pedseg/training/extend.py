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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pedseg import __version__
from pedseg.data.postprocess_rules import TrainedPostprocess, trained_postprocess
from pedseg.data.sampler import BalancedSampler
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ModelError
from pedseg.io.atomic import make_folder
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.models.mapping import LabelMapping
from pedseg.models.unet import MultiDomainUNet
from pedseg.runfolder.card import ModelCard
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.loading import LoadedRun, load_run
from pedseg.runfolder.pointer import set_last_run
from pedseg.runfolder.profiles import read_profile
from pedseg.runtime import configure_threads, resolve_device, seed_everything
from pedseg.training.base_run import check_extendable, check_new_output, read_base
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo
from pedseg.training.events import TrainEvent, TrainResult
from pedseg.training.prepare import DomainData, prepare_domains
from pedseg.training.profiling import profile_run
from pedseg.training.resume import RunState
from pedseg.training.runner import Job, run_epochs
from pedseg.training.step import LossSpec

__all__ = [
    "ExtendConfig",
    "check_extendable",
    "extend_run",
    "extension_mode",
    "freeze_for_extension",
]

logger = logging.getLogger(__name__)
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
    layout, card = read_base(base)
    check_extendable(card, layout.root, spec.name)
    out = (
        Path(out)
        if out is not None
        else layout.root.parent / f"{layout.root.name}-plus-{spec.name}"
    )
    check_new_output(out)
    run = load_run(layout)
    net = run.network()
    image_size = card.image_size or (0, 0)
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
    sampler = BalancedSampler(
        [data.pool], batch_size=config.batch_size, seed=config.seed, fg_fraction=config.fg_fraction
    )
    make_folder(out)
    rules = trained_postprocess([spec], cache_root=cache_root)
    job = Job(
        config=train_config,
        domains=[data],
        layout=RunLayout(out),
        model=net,
        forward=net,
        optimizer=torch.optim.Adam(trainable, lr=config.lr),
        sampler=sampler,
        run=RunState(),
        info=DistInfo(),
        device=device,
        steps=config.steps_per_epoch or sampler.default_steps_per_epoch(),
        loss=LossSpec(scheme="dsl", lam=0.0, seg_loss=config.seg_loss),
        route=lambda chunks: [(index, count) for _, count in chunks],
        set_mode=lambda: extension_mode(net, index),
        make_card=lambda progress: _extended_card(card, spec, mapping, config, progress, rules),
        callback=callback,
        state_extra={
            "extension": {"domain": spec.name, **config.to_dict()},
            "base_model_sha256": card.model_sha256,
        },
        label="extension epoch",
    )
    job.emit("run_start", epoch=1, steps=job.steps)
    run_epochs(job)
    _store_profile(run, job.layout, data, device)
    set_last_run(out)
    job.emit("run_end", epoch=job.run.epoch, steps=job.steps)
    state = job.run
    history = tuple(state.history)
    return TrainResult(
        out,
        state.epoch,
        state.best_epoch,
        state.best_metric,
        history=history,
        weights_epoch=state.weights_epoch,
        weights_metric=state.weights_metric,
    )


def _store_profile(base: LoadedRun, out: RunLayout, data: DomainData, device: torch.device) -> None:
    """Carry the base run's domain profiles (the old domains' embeddings are unchanged), add the
    new domain's cross centroid to each, and profile the new domain (without cross centroids: the
    old domains' scans are not at hand); without base profiles, recognition stays unavailable."""
    try:
        carried = read_profile(base.layout, model_sha256=base.card.model_sha256)
    except ModelError as exc:
        logger.warning("no domain profile for %s: %s", out.root, exc)
        return
    specs = [*(base.domain(name).spec for name in base.domains), data.spec]
    image_size = base.card.image_size or (0, 0)
    profile_run(
        out.root,
        [data],
        specs=specs,
        image_size=image_size,
        seed=0,
        device=device,
        carry=carried,
        source="extension",
    )


def _extended_card(
    base: ModelCard,
    spec: DomainSpec,
    mapping: LabelMapping,
    config: ExtendConfig,
    progress: RunState,
    rules: TrainedPostprocess,
) -> ModelCard:
    """The base run's card with the new domain appended (no case ids, no paths)."""
    card = base.with_domain(
        spec, mapping, rules.components.get(spec.name, {}), rules.chains.get(spec.name)
    )
    return replace(
        card,
        training={
            "base_model_sha256": base.model_sha256,
            "base": dict(base.training),
            "extension": {"domain": spec.name, **config.to_dict()},
        },
        best_epoch=progress.best_epoch,
        best_metric=progress.best_metric,
        weights_epoch=progress.weights_epoch,
        weights_metric=progress.weights_metric,
        artifacts={},
        pedseg_version=__version__,
        extended_from={"model_sha256": base.model_sha256, "domain": spec.name},
    )
