"""The training run: :func:`train`.

Per epoch: ``steps_per_epoch`` balanced, augmented multi-domain batches (Adam), then validation on the
held-out cases, then (rank 0) the ``latest`` checkpoint, and when the mean validation Dice improves the
``best`` checkpoint, ``model.safetensors`` and ``model.json``; ``metrics.csv`` and ``curves.png`` are
rewritten from the run's history each epoch. A non-finite loss stops the run with a
:class:`TrainingError` naming the epoch and step before any weight is updated with it, and no
checkpoint is ever written from non-finite weights. ``resume=True`` restores everything that
influences the next step, so a resumed run is bit-identical to an uninterrupted one on the same
machine. The library never prints: progress goes to ``callback`` and to :mod:`logging`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pedseg.data.augment import AugmentConfig
from pedseg.data.sampler import BalancedSampler
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, TrainingError
from pedseg.inference.profiles import cross_slices, store_profile, training_slices
from pedseg.models.build import ModelConfig, build_model
from pedseg.training import distributed as dist_utils
from pedseg.training.artifacts import (
    baseline_card,
    check_run_dir,
    set_last_run,
    write_json,
)
from pedseg.training.checkpoint import find_checkpoint, load_checkpoint, read_state
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo
from pedseg.training.events import TrainEvent, TrainResult
from pedseg.training.prepare import (
    DomainData,
    prepare_domains,
    resolve_image_size,
    training_images,
)
from pedseg.training.resume import RunState, check_resumable, check_validation_cases
from pedseg.training.runtime import (
    autocast,
    configure_threads,
    resolve_amp,
    resolve_channels_last,
    resolve_device,
    seed_everything,
)
from pedseg.training.session import Session, finish_epoch, finish_run
from pedseg.training.step import HostBatch, compute_losses, gather_batch, to_device

__all__ = ["Callback", "train"]

logger = logging.getLogger(__name__)
Callback = Callable[[TrainEvent], None]


def train(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    *,
    out: Path,
    resume: bool = False,
    cache_root: Path | None = None,
    callback: Callback | None = None,
) -> TrainResult:
    """Train ``config`` on the domains ``specs`` into the run folder ``out``; see the module doc."""
    ordered = _order_specs(config, specs)
    out = Path(out)
    info = dist_utils.detect()
    configure_threads()
    device = resolve_device(config.device, local_rank=info.local_rank)
    created = dist_utils.init_process_group(info, device)
    try:
        if config.scheme == "baseline":
            return _train_baseline(config, ordered, out, resume, cache_root, callback, info, device)
        has_checkpoint = find_checkpoint(out / "checkpoints" / "latest") is not None
        check_run_dir(out, resume=resume, has_checkpoint=has_checkpoint)
        dist_utils.barrier(info)
        result = _train_model(config, ordered, out, cache_root, callback, info, device, None)
        if info.is_main:
            set_last_run(out)
        return result
    finally:
        dist_utils.shutdown(created)


def _order_specs(config: TrainConfig, specs: Sequence[DomainSpec]) -> list[DomainSpec]:
    by_name = {spec.name: spec for spec in specs}
    missing = [name for name in config.domains if name not in by_name]
    if missing:
        raise ConfigError(
            f"no descriptor was given for domain {missing[0]!r}; "
            f"descriptors given: {', '.join(sorted(by_name)) or 'none'}"
        )
    return [by_name[name] for name in config.domains]


def _train_baseline(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    out: Path,
    resume: bool,
    cache_root: Path | None,
    callback: Callback | None,
    info: DistInfo,
    device: torch.device,
) -> TrainResult:
    """One independent model per domain under ``out/baseline/<domain>``."""
    member_dirs = {spec.name: out / "baseline" / spec.name for spec in specs}
    has_any = any(find_checkpoint(d / "checkpoints" / "latest") for d in member_dirs.values())
    check_run_dir(out, resume=resume, has_checkpoint=has_any)
    dist_utils.barrier(info)
    members: dict[str, TrainResult] = {}
    for spec in specs:
        explicit = config.validation_cases(spec.name)
        sub = replace(
            config, domains=(spec.name,), val_cases=((spec.name, explicit),) if explicit else ()
        )
        members[spec.name] = _train_model(
            sub, [spec], member_dirs[spec.name], cache_root, callback, info, device, spec.name
        )
    if info.is_main:
        relative = {name: f"baseline/{name}" for name in member_dirs}
        write_json(out / "model.json", baseline_card(config=config, specs=specs, members=relative))
        set_last_run(out)
    best = [m.best_metric for m in members.values()]
    return TrainResult(
        run_dir=out,
        epochs=max(m.epochs for m in members.values()),
        best_epoch=0,
        best_metric=float(sum(best) / len(best)),
        members=members,
    )


def _prepare_data(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    cache_root: Path | None,
    image_size: tuple[int, int],
    info: DistInfo,
    device: torch.device,
) -> list[DomainData]:
    """Rank 0 builds the caches first; the others then open them (no concurrent builds)."""
    if not info.enabled:
        return prepare_domains(config, specs, cache_root=cache_root, image_size=image_size)
    failure: Exception | None = None
    domains: list[DomainData] = []
    if info.is_main:
        try:
            domains = prepare_domains(config, specs, cache_root=cache_root, image_size=image_size)
        except Exception as exc:  # re-raised below once the other ranks know
            failure = exc
    if not dist_utils.broadcast_flag(failure is None, info, device):
        if failure is not None:
            raise failure
        raise TrainingError("rank 0 could not prepare the training data; see its error")
    if not info.is_main:
        domains = prepare_domains(config, specs, cache_root=cache_root, image_size=image_size)
    return domains


def _train_model(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    out: Path,
    cache_root: Path | None,
    callback: Callback | None,
    info: DistInfo,
    device: torch.device,
    member: str | None,
) -> TrainResult:
    latest = find_checkpoint(out / "checkpoints" / "latest")
    state = read_state(latest) if latest is not None else None
    if state is not None:
        check_resumable(state, out=out, config=config, specs=specs)
    image_size = resolve_image_size(config, specs)
    domains = _prepare_data(config, specs, cache_root, image_size, info, device)
    seed_everything(config.seed)
    model_config = ModelConfig(
        arch=config.arch,
        base_width=config.base_width,
        depth=config.depth,
        in_channels=1,
        norm="bn" if config.scheme == "joint" else "dsbn",
    )
    heads = sorted({(d.mapping.head, d.mapping.num_classes) for d in domains})
    model = build_model(model_config, num_classes=[count for _, count in heads]).to(device)
    channels_last = resolve_channels_last(config.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sampler = BalancedSampler(
        [d.pool for d in domains],
        batch_size=config.batch_size,
        seed=config.seed,
        fg_fraction=config.fg_fraction,
        world_size=info.world_size,
    )
    steps = config.steps_per_epoch or sampler.default_steps_per_epoch()
    val_cases = {d.spec.name: d.val_cases for d in domains}
    run = RunState()
    if latest is not None and state is not None:
        check_validation_cases(state, out=out, val_cases=val_cases)
        load_checkpoint(latest, model=model, optimizer=optimizer)
        run = RunState.from_json(state)
        logger.info("resuming %s after epoch %d (step %d)", out, run.epoch, run.global_step)
    session = Session(
        config=config,
        specs=specs,
        domains=domains,
        out=out,
        model=model,
        model_config=model_config,
        optimizer=optimizer,
        run=run,
        info=info,
        device=device,
        image_size=image_size,
        channels_last=channels_last,
        amp=resolve_amp(config.amp, device),
        callback=callback if info.is_main else None,
        member=member,
        val_cases=val_cases,
    )
    runner: nn.Module = dist_utils.wrap_model(model, info, device)
    if config.compile:
        runner = torch.compile(runner)  # type: ignore[assignment]
    session.emit("run_start", epoch=run.epoch + 1, steps=steps)
    try:
        for epoch in range(run.epoch + 1, config.epochs + 1):
            _run_epoch(session, runner, sampler, epoch, steps)
    finally:
        finish_run(session)
    if info.is_main:  # domain recognition: profile the best weights' embedding per domain
        slices = {d.spec.name: training_slices(d, seed=config.seed) for d in domains}
        cross = cross_slices(specs, training_images(domains), image_size=image_size)
        store_profile(out, slices, cross=cross, device=device)
    dist_utils.barrier(info)
    session.emit("run_end", epoch=run.epoch, steps=steps)
    return TrainResult(
        run_dir=out,
        epochs=run.epoch,
        best_epoch=run.best_epoch,
        best_metric=run.best_metric,
        history=tuple(run.history),
    )


def _host_batches(
    session: Session, sampler: BalancedSampler, epoch: int, steps: int
) -> Iterator[HostBatch]:
    """This rank's batches of an epoch, prefetched by ``num_workers`` threads when asked."""
    info = session.info

    def make(step: int) -> HostBatch:
        batch = sampler.batch(epoch, step).shard(info.rank, info.world_size)
        return gather_batch(session.domains, batch)

    workers = session.config.num_workers
    if workers == 0:
        for step in range(1, steps + 1):
            yield make(step)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pedseg-batch") as pool:
        pending: list[Future[HostBatch]] = []
        next_step = 1
        for _ in range(steps):
            while next_step <= steps and len(pending) <= workers:
                pending.append(pool.submit(make, next_step))
                next_step += 1
            yield pending.pop(0).result()


def _run_epoch(
    session: Session, runner: nn.Module, sampler: BalancedSampler, epoch: int, steps: int
) -> None:
    config, run, device = session.config, session.run, session.device
    augment = AugmentConfig() if config.augment else None
    session.model.train()
    session.emit("epoch_start", epoch=epoch, steps=steps)
    sums = torch.zeros(4, dtype=torch.float64)
    started = time.perf_counter()
    for step, host in enumerate(_host_batches(session, sampler, epoch, steps), start=1):
        step_start = time.perf_counter()
        images, targets = to_device(
            host,
            device=device,
            channels_last=session.channels_last,
            augment=augment,
            global_size=config.batch_size,
            seed=config.seed,
            epoch=epoch,
            step=step,
        )
        with autocast(device, session.amp):
            terms = compute_losses(
                runner,
                images,
                targets,
                host.chunks,
                scheme=config.scheme,
                tau=config.tau,
                lam=config.lam,
                seg_loss=config.seg_loss,
            )
        values = dist_utils.all_reduce_mean(terms.stacked(), session.info).to("cpu", torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise TrainingError(
                f"non-finite loss at epoch {epoch}, step {step} (global step "
                f"{run.global_step + 1}): CE {values[0].item()}, contrastive "
                f"{values[1].item()}; lower the learning rate (lr={config.lr}) or check the data; "
                "the checkpoints hold the last finite epoch"
            )
        optimizer = session.optimizer
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        run.global_step += 1
        sums += values
        seconds = max(time.perf_counter() - step_start, 1e-9)
        session.emit(
            "step",
            epoch=epoch,
            step=step,
            steps=steps,
            losses={
                "ce": float(values[0]),
                "contrastive": float(values[1]),
                "total": float(values[2]),
                **({"dice": float(values[3])} if config.seg_loss == "dice-ce" else {}),
            },
            slices_per_s=config.batch_size / seconds,
        )
    train_seconds = max(time.perf_counter() - started, 1e-9)
    means = (sums / steps).tolist()
    row: dict[str, float | int] = {
        "epoch": epoch,
        "step": run.global_step,
        "loss_ce": means[0],
        "loss_contrastive": means[1],
        "loss_total": means[2],
        "loss_dice": means[3],
    }
    finish_epoch(session, row, started=started, train_seconds=train_seconds, steps=steps)
    if not math.isfinite(float(row["loss_total"])):  # pragma: no cover - caught per step
        raise TrainingError(f"non-finite mean loss in epoch {epoch}")
