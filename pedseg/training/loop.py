"""The training run: :func:`train`.

Builds the network, optimizer and sampler of a run, restores its checkpoint on ``resume`` and hands
the epochs to :mod:`pedseg.training.runner` (the epoch loop, validation, checkpoints, weights and
card). ``resume=True`` restores everything that influences the next step, so a resumed run is
bit-identical to an uninterrupted one on the same machine. At the end, rank 0 profiles the best
weights' embedding per domain (domain recognition). The library never prints: progress goes to
``callback`` and to :mod:`logging`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from pedseg.data.postprocess_rules import TrainedPostprocess, trained_postprocess
from pedseg.data.sampler import BalancedSampler
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, TrainingError
from pedseg.models.build import ModelConfig, build_model
from pedseg.runfolder.card import ModelCard, write_card
from pedseg.runfolder.checkpoint import (
    check_run_dir,
    find_checkpoint,
    load_checkpoint,
    read_state,
)
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.pointer import set_last_run
from pedseg.runtime import (
    configure_threads,
    resolve_device,
    seed_everything,
)
from pedseg.training import distributed as dist_utils
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo
from pedseg.training.events import TrainEvent, TrainResult
from pedseg.training.precision import Precision, choose_precision
from pedseg.training.prepare import DomainData, prepare_domains, resolve_image_size
from pedseg.training.profiling import profile_run
from pedseg.training.resume import RunState, check_resumable, check_validation_cases
from pedseg.training.runner import Budget, Job, run_epochs
from pedseg.training.step import LossSpec, route_of

__all__ = ["Callback", "train"]

logger = logging.getLogger(__name__)
Callback = Callable[[TrainEvent], None]


@dataclass(frozen=True)
class _Context:
    """What every model of a run shares."""

    cache_root: Path | None
    callback: Callback | None
    info: DistInfo
    device: torch.device
    budget: Budget | None
    clock: Callable[[], float]


def train(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    *,
    out: Path,
    resume: bool = False,
    cache_root: Path | None = None,
    callback: Callback | None = None,
    budget: Budget | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainResult:
    """Train ``config`` on the domains ``specs`` into the run folder ``out``; see the module doc.

    ``budget``: fit the run's epochs to a wall-clock budget after its first epoch (a baseline
    run shares it between its per-domain models); ``clock`` times steps and epochs."""
    ordered = _order_specs(config, specs)
    out = Path(out)
    info = dist_utils.detect()
    configure_threads()
    device = resolve_device(config.device, local_rank=info.local_rank)
    context = _Context(cache_root, callback, info, device, budget, clock)
    created = dist_utils.init_process_group(info, device)
    try:
        if config.scheme == "baseline":
            return _train_baseline(config, ordered, out, resume, context)
        has_checkpoint = find_checkpoint(RunLayout(out).checkpoint()) is not None
        check_run_dir(out, resume=resume, has_checkpoint=has_checkpoint)
        dist_utils.barrier(info)
        result = _train_model(config, ordered, out, context, None)
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
    config: TrainConfig, specs: Sequence[DomainSpec], out: Path, resume: bool, context: _Context
) -> TrainResult:
    """One independent model per domain under ``out/baseline/<domain>``; with a budget, each
    member gets an equal share of what is left when it starts."""
    layout = RunLayout(out)
    member_dirs = {spec.name: layout.member(spec.name).root for spec in specs}
    has_any = any(find_checkpoint(RunLayout(d).checkpoint()) for d in member_dirs.values())
    check_run_dir(out, resume=resume, has_checkpoint=has_any)
    dist_utils.barrier(context.info)
    members: dict[str, TrainResult] = {}
    for k, spec in enumerate(specs):
        explicit = config.validation_cases(spec.name)
        sub = replace(
            config, domains=(spec.name,), val_cases=((spec.name, explicit),) if explicit else ()
        )
        share = context
        if context.budget is not None:
            left = context.budget.seconds - (context.budget.clock() - context.budget.started)
            budget = replace(
                context.budget, seconds=left / (len(specs) - k), started=context.budget.clock()
            )
            share = replace(context, budget=budget)
        members[spec.name] = _train_model(sub, [spec], member_dirs[spec.name], share, spec.name)
    if context.info.is_main:
        card = ModelCard.for_baseline(specs=specs, training=config.to_dict(include_val_cases=False))
        write_card(layout, card)
        set_last_run(out)
    best = [m.best_metric for m in members.values()]
    kept = [m.weights_metric for m in members.values() if m.weights_metric is not None]
    return TrainResult(
        run_dir=out,
        epochs=max(m.epochs for m in members.values()),
        best_epoch=0,
        best_metric=float(sum(best) / len(best)),
        members=members,
        weights_metric=float(sum(kept) / len(kept)) if len(kept) == len(members) else None,
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
    context: _Context,
    member: str | None,
) -> TrainResult:
    cache_root, callback, info, device = (
        context.cache_root,
        context.callback,
        context.info,
        context.device,
    )
    layout = RunLayout(out)
    latest = find_checkpoint(layout.checkpoint())
    state = read_state(latest) if latest is not None else None
    if state is not None:
        check_resumable(state, out=out, config=config, specs=specs)
    image_size = resolve_image_size(config, specs)
    domains = _prepare_data(config, specs, cache_root, image_size, info, device)
    precision = Precision.from_json(state.get("precision")) if state is not None else None
    if precision is None:
        heads = sorted({(d.mapping.head, d.mapping.num_classes) for d in domains})
        chosen = (
            choose_precision(
                config, device, num_classes=[n for _, n in heads], image_size=image_size
            )
            if info.is_main
            else Precision(None, False)
        )
        code = dist_utils.broadcast_int(
            (chosen.amp is torch.bfloat16) + 2 * chosen.channels_last, info, device
        )
        precision = Precision(torch.bfloat16 if code & 1 else None, bool(code & 2))
    rules = (
        trained_postprocess(specs, cache_root=cache_root)
        if info.is_main
        else TrainedPostprocess({}, {})
    )
    seed_everything(config.seed)
    job = _make_job(config, specs, domains, layout, image_size, info, device, precision, rules)
    job.callback, job.member = callback, member
    job.budget, job.clock = context.budget, context.clock
    if latest is not None and state is not None:
        val_cases = {d.spec.name: d.val_cases for d in domains}
        check_validation_cases(state, out=out, val_cases=val_cases)
        load_checkpoint(latest, model=job.model, optimizer=job.optimizer)
        job.run = RunState.from_json(state)
        logger.info("resuming %s after epoch %d (step %d)", out, job.run.epoch, job.run.global_step)
    job.emit("run_start", epoch=job.run.epoch + 1, steps=job.steps)
    run_epochs(job)
    if info.is_main:  # domain recognition: profile the kept weights' embedding per domain
        profile_run(
            out, domains, specs=specs, image_size=image_size, seed=config.seed, device=device
        )
    dist_utils.barrier(info)
    job.emit("run_end", epoch=job.run.epoch, steps=job.steps)
    run = job.run
    return TrainResult(
        run_dir=out,
        epochs=run.epoch,
        best_epoch=run.best_epoch,
        best_metric=run.best_metric,
        history=tuple(run.history),
        weights_epoch=run.weights_epoch,
        weights_metric=run.weights_metric,
    )


def _make_job(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    domains: Sequence[DomainData],
    layout: RunLayout,
    image_size: tuple[int, int],
    info: DistInfo,
    device: torch.device,
    precision: Precision,
    rules: TrainedPostprocess,
) -> Job:
    """The network, optimizer and sampler of a fresh run, as the epoch runner's job."""
    model_config = ModelConfig(
        arch=config.arch,
        base_width=config.base_width,
        depth=config.depth,
        in_channels=1,
        norm="bn" if config.scheme == "joint" else "dsbn",
    )
    heads = sorted({(d.mapping.head, d.mapping.num_classes) for d in domains})
    model = build_model(model_config, num_classes=[count for _, count in heads]).to(device)
    channels_last = precision.channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    sampler = BalancedSampler(
        [d.pool for d in domains],
        batch_size=config.batch_size,
        seed=config.seed,
        fg_fraction=config.fg_fraction,
        world_size=info.world_size,
    )
    forward: nn.Module = dist_utils.wrap_model(model, info, device)
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]

    def make_card(progress: RunState) -> ModelCard:
        training = config.to_dict(include_val_cases=False)
        if progress.fitted_epochs is not None and progress.fitted_epochs != config.epochs:
            # a budget refitted the run: the card says what ran, and what was planned
            training = {
                **training,
                "epochs": progress.fitted_epochs,
                "planned_epochs": config.epochs,
            }
        return ModelCard.for_model(
            scheme=config.scheme,
            specs=specs,
            model=model_config,
            mappings=[d.mapping for d in domains],
            image_size=image_size,
            training=training,
            best_epoch=progress.best_epoch,
            best_metric=progress.best_metric,
            weights_epoch=progress.weights_epoch,
            weights_metric=progress.weights_metric,
            postprocess=rules.components,
            label_chains=rules.chains,
        )

    return Job(
        config=config,
        domains=domains,
        layout=layout,
        model=model,
        forward=forward,
        optimizer=torch.optim.Adam(model.parameters(), lr=config.lr),
        sampler=sampler,
        run=RunState(),
        info=info,
        device=device,
        steps=config.steps_per_epoch or sampler.default_steps_per_epoch(),
        loss=LossSpec(
            scheme=config.scheme, tau=config.tau, lam=config.lam, seg_loss=config.seg_loss
        ),
        route=lambda chunks: route_of(chunks, scheme=config.scheme),
        set_mode=model.train,
        make_card=make_card,
        channels_last=channels_last,
        amp=precision.amp,
        state_extra={"precision": precision.to_json()},
    )
