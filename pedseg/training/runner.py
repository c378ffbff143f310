"""The epoch runner: one loop for every kind of training (``train``, ``add-domain --to-model``).

Per epoch: ``job.steps`` balanced, augmented batches (Adam), then validation on the held-out cases,
then (rank 0) the ``latest`` checkpoint, the ``best`` checkpoint when the mean validation Dice
improves or ties (ties go to the later epoch), and the weights and the card: every epoch when the
run keeps its final weights (``config.keep``), with the ``best`` checkpoint otherwise;
``metrics.csv`` is rewritten from the run's history each epoch and ``curves.png`` when epochs are
slow or the run ends. A non-finite loss stops the run with a :class:`TrainingError` naming the
epoch and step before any weight is updated with it, and no checkpoint is ever written from
non-finite weights.

What differs between kinds of training is data in the :class:`Job`: which parameters the optimizer
holds, how the network is put in training mode (``set_mode``), how batch chunks are routed to heads
(``route``), what the loss is made of (``loss``), and the card and checkpoint state it writes.
The library never prints: progress goes to ``callback`` and to :mod:`logging`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from pedseg.data.augment import AugmentConfig
from pedseg.data.sampler import BalancedSampler
from pedseg.errors import TrainingError
from pedseg.runfolder.card import ModelCard, read_card, write_card
from pedseg.runfolder.checkpoint import save_checkpoint
from pedseg.runfolder.layout import RunLayout
from pedseg.runfolder.metrics import plot_curves, write_metrics_csv
from pedseg.runfolder.writer import save_model
from pedseg.runtime import autocast
from pedseg.training import distributed as dist_utils
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo
from pedseg.training.events import EventKind, TrainEvent
from pedseg.training.prepare import DomainData
from pedseg.training.resume import RunState
from pedseg.training.schedule import apply_lr
from pedseg.training.step import (
    LOSS_TERMS,
    HostBatch,
    LossSpec,
    LossTerms,
    compute_losses,
    gather_batch,
    to_device,
)
from pedseg.training.validate import validate

__all__ = ["Budget", "Job", "run_epochs"]

logger = logging.getLogger(__name__)
VALIDATION_BATCH = 16
CURVES_EVERY_EPOCH_AFTER_S = 20.0
"""Redraw ``curves.png`` after every epoch only when epochs are this slow (drawing costs ~1 s);
otherwise it is drawn when the run ends."""

Route = Callable[[Sequence[tuple[int, int]]], list[tuple[int, int]]]
#: Share of a budget kept for what follows the epochs (domain profiles, the card).
BUDGET_RESERVE = 0.03
#: A refit that changes the epochs by less than this share is not made.
REFIT_TOLERANCE = 0.05
#: From the second half of a budgeted run, the pace is that of this many last epochs.
LATE_PACE_EPOCHS = 2
#: From the second half, the horizon shrinks only for a projected overrun beyond this fraction.
LATE_SLACK = 0.05


@dataclass(frozen=True)
class Budget:
    """A wall-clock budget: ``seconds`` counted from ``started`` (a reading of ``clock``).

    After each epoch, until the epochs have taken half the budget, the run's number of epochs is
    fitted to the budget: as many as the remaining time holds at the measured pace (the median epoch,
    steps, validation and checkpoints, so that one epoch slowed by another job does not set the
    pace; the first epoch left out once there are others: it pays for warm-up),
    keeping :data:`BUDGET_RESERVE` of the budget for the end of the run; a change of less than
    :data:`REFIT_TOLERANCE` is ignored. The learning-rate schedule spans the fitted epochs, so it
    completes on time. From then on the horizon only shrinks, when at the pace of the last
    :data:`LATE_PACE_EPOCHS` epochs the run would end more than :data:`LATE_SLACK` after the
    budget (another job took the cores): the decay then steps down to the shorter schedule
    instead of the run ending late.
    """

    seconds: float
    started: float
    clock: Callable[[], float] = time.monotonic

    def remaining(self) -> float:
        return self.seconds * (1.0 - BUDGET_RESERVE) - (self.clock() - self.started)

    def overruns(self, epoch_seconds: float, epochs_left: int) -> bool:
        """Whether ``epochs_left`` more epochs of ``epoch_seconds`` end more than
        :data:`LATE_SLACK` after the whole budget."""
        elapsed = self.clock() - self.started
        return elapsed + epochs_left * epoch_seconds > self.seconds * (1.0 + LATE_SLACK)

    def fit(self, epoch_seconds: float, *, done: int) -> int:
        """The run's epochs after ``done`` epochs that took ``epoch_seconds`` each."""
        more = int(max(self.remaining(), 0.0) // max(epoch_seconds, 1e-9))
        return max(done, done + more)


@dataclass
class Job:
    """One model's training, as the epoch runner sees it.

    Args:
        config: the run's config (for an extension, the equivalent single-domain config).
        domains: the training data, in sampler order.
        layout: the run folder written to (rank 0).
        model: the unwrapped network (validated, checkpointed, saved).
        forward: what computes the losses (the model, DDP-wrapped and/or compiled).
        loss: the loss terms; route: (domain, count) chunks -> (head, count) the network runs.
        set_mode: puts the network in its training mode (called each epoch and after validation).
        make_card: the card of the weights being saved, from the run state.
        state_extra: more fields for every checkpoint's ``state.json``.
        label: how log lines name an epoch ("epoch", "extension epoch").
    """

    config: TrainConfig
    domains: Sequence[DomainData]
    layout: RunLayout
    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    sampler: BalancedSampler
    run: RunState
    info: DistInfo
    device: torch.device
    steps: int
    loss: LossSpec
    route: Route
    set_mode: Callable[[], object]
    make_card: Callable[[RunState], ModelCard]
    channels_last: bool = False
    amp: torch.dtype | None = None
    callback: Callable[[TrainEvent], None] | None = None
    member: str | None = None
    state_extra: Mapping[str, Any] | None = None
    label: str = "epoch"
    budget: Budget | None = None
    clock: Callable[[], float] = time.perf_counter
    """Times steps and epochs (tests inject one)."""

    @property
    def epochs(self) -> int:
        """The run's epochs: the config's, or those a budget fitted it to."""
        return self.run.fitted_epochs or self.config.epochs

    @property
    def total_steps(self) -> int:
        """The schedule's horizon."""
        return self.epochs * self.steps

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if self.callback is not None and self.info.is_main:
            self.callback(
                TrainEvent(
                    kind=kind,
                    epochs=self.epochs,
                    global_step=self.run.global_step,
                    model=self.member,
                    **fields,
                )
            )


def run_epochs(job: Job) -> None:
    """Train from the epoch after ``job.run.epoch`` to ``job.epochs`` (fitted to the budget after
    the first epoch, when there is one), then draw the curves (rank 0), also when the run stops
    with an error."""
    try:
        while job.run.epoch < job.epochs:
            _run_epoch(job, job.run.epoch + 1)
            _fit_to_budget(job)
        _record_fitted_epochs(job)
    finally:
        if job.info.is_main and job.run.history:
            plot_curves(job.layout.curves, job.run.history)


def _record_fitted_epochs(job: Job) -> None:
    """The card of the kept weights was written when they were saved; a budget may have refitted
    the run's epochs since: rewrite its training entry with the epochs that ran (rank 0)."""
    if not job.info.is_main or job.run.fitted_epochs is None or not job.layout.card.is_file():
        return
    card = read_card(job.layout)
    training = job.make_card(job.run).training
    if dict(card.training) != dict(training):
        write_card(job.layout, replace(card, training=training))


def _fit_to_budget(job: Job) -> None:
    """Fit the run's epochs to its budget (see :class:`Budget`; rank 0 decides, every rank
    follows): until the epochs have taken half the budget both ways at the median pace, from then
    on only shorter, at the pace of the last epochs, when the run would overrun (the machine got
    slower)."""
    run = job.run
    if job.budget is None:
        return
    fitted = 0
    if job.info.is_main and run.history:
        times = [float(row["seconds"]) for row in run.history]
        # Late once the epochs have taken half the budget, not by the epochs fitted so far: one
        # slow epoch early on (another job took the cores) must not shrink the horizon for good.
        late = sum(times) > job.budget.seconds / 2 and run.fitted_epochs is not None
        if late:
            recent = times[-LATE_PACE_EPOCHS:]
            pace = sum(recent) / len(recent)
        else:  # the median: a transient slowdown is not the pace of the rest of the run
            pace = statistics.median(times[1:]) if len(times) > 1 else times[0]
        fitted = job.budget.fit(pace, done=run.epoch)
        current = run.fitted_epochs
        keep = late and current is not None and not job.budget.overruns(pace, current - run.epoch)
        if current is not None and (
            keep
            or abs(fitted - current) <= REFIT_TOLERANCE * current
            or (late and fitted > current)
        ):
            fitted = current
        if fitted != current:
            logger.info(
                "fitted the run to its %.0f s budget: %d epochs at %.1f s per epoch",
                job.budget.seconds,
                fitted,
                pace,
            )
    run.fitted_epochs = dist_utils.broadcast_int(fitted, job.info, job.device)


def _host_batches(job: Job, epoch: int) -> Iterator[HostBatch]:
    """This rank's batches of an epoch, prefetched by ``num_workers`` threads when asked."""
    info, steps = job.info, job.steps

    def make(step: int) -> HostBatch:
        batch = job.sampler.batch(epoch, step).shard(info.rank, info.world_size)
        return gather_batch(job.domains, batch)

    workers = job.config.num_workers
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


def _run_epoch(job: Job, epoch: int) -> None:
    config, run = job.config, job.run
    augment = AugmentConfig() if config.augment else None
    active = job.loss.active_terms()
    job.set_mode()
    job.emit("epoch_start", epoch=epoch, steps=job.steps)
    sums = torch.zeros(len(LOSS_TERMS), dtype=torch.float64)
    started = job.clock()
    for step, host in enumerate(_host_batches(job, epoch), start=1):
        step_start = job.clock()
        images, targets = to_device(
            host,
            device=job.device,
            channels_last=job.channels_last,
            augment=augment,
            global_size=config.batch_size,
            seed=config.seed,
            epoch=epoch,
            step=step,
            flip_axes=[d.spec.flip for d in job.domains],
        )
        with autocast(job.device, job.amp):
            terms = compute_losses(
                job.forward,
                images,
                targets,
                host.chunks,
                loss=job.loss,
                route=job.route(host.chunks),
            )
        values = dist_utils.all_reduce_mean(terms.stacked(), job.info).to("cpu", torch.float64)
        named = LossTerms.named(values.tolist())
        if not bool(torch.isfinite(values).all()):
            shown = ", ".join(f"{name} {named[name]}" for name in active)
            raise TrainingError(
                f"non-finite loss at {job.label} {epoch}, step {step} (global step "
                f"{run.global_step + 1}): {shown}; lower the learning rate (lr={config.lr}) or "
                "check the data; the checkpoints hold the last finite epoch"
            )
        job.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        apply_lr(job.optimizer, config, run.global_step, job.total_steps)
        job.optimizer.step()
        run.global_step += 1
        sums += values
        seconds = max(job.clock() - step_start, 1e-9)
        job.emit(
            "step",
            epoch=epoch,
            step=step,
            steps=job.steps,
            losses={name: named[name] for name in active},
            slices_per_s=config.batch_size / seconds,
        )
    train_seconds = max(job.clock() - started, 1e-9)
    means = LossTerms.named((sums / job.steps).tolist())
    row: dict[str, float | int] = {
        "epoch": epoch,
        "step": run.global_step,
        **{f"loss_{name}": means[name] for name in LOSS_TERMS},
    }
    _finish_epoch(job, row, started=started, train_seconds=train_seconds)


def _check_finite_weights(model: nn.Module, epoch: int) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"non-finite weights ({name}) after epoch {epoch}; not saving them; the "
                "checkpoints hold the last finite epoch; lower the learning rate"
            )


def _finish_epoch(
    job: Job, row: dict[str, float | int], *, started: float, train_seconds: float
) -> None:
    """Validate, record the epoch and (rank 0) write checkpoints and artifacts."""
    run, config, epoch = job.run, job.config, int(row["epoch"])
    _check_finite_weights(job.model, epoch)
    is_best = False
    if job.info.is_main:
        metrics = validate(
            job.model,
            job.domains,
            device=job.device,
            batch_size=VALIDATION_BATCH,
            channels_last=job.channels_last,
            amp=job.amp,
        )
        job.set_mode()
        row.update(metrics)
        row["lr"] = float(job.optimizer.param_groups[0]["lr"])
        row["seconds"] = job.clock() - started
        row["slices_per_s"] = job.steps * config.batch_size / train_seconds
        run.epoch = epoch
        run.history.append(dict(row))
        # Ties go to the later epoch: while validation Dice is still flat (often 0 early on for small
        # structures), the most trained weights are the better "best", not epoch 1's.
        is_best = metrics["val_dice"] >= run.best_metric
        if is_best:
            run.best_metric = metrics["val_dice"]
            run.best_epoch = epoch
        publish = is_best or config.keep == "final"
        if publish:
            run.weights_epoch, run.weights_metric = epoch, float(metrics["val_dice"])
        _write_epoch(job, is_best=is_best, publish=publish)
        if row["seconds"] >= CURVES_EVERY_EPOCH_AFTER_S:
            plot_curves(job.layout.curves, run.history)
        logger.info(
            "%s %d/%d: loss %.4f, val Dice %.4f%s",
            job.label,
            epoch,
            job.epochs,
            row["loss_total"],
            metrics["val_dice"],
            " (best)" if is_best else "",
        )
    else:
        run.epoch = epoch
    dist_utils.barrier(job.info)
    job.emit("epoch_end", epoch=epoch, steps=job.steps, metrics=dict(row), is_best=is_best)


def _write_epoch(job: Job, *, is_best: bool, publish: bool) -> None:
    """The ``latest`` checkpoint, the ``best`` one when ``is_best``, and, when ``publish``, the
    run's weights and card (every epoch with ``keep: final``, on improvement with ``best``)."""
    run, layout = job.run, job.layout
    state = run.to_json(
        config=job.config,
        specs=[d.spec for d in job.domains],
        val_cases={d.spec.name: d.val_cases for d in job.domains},
        world_size=job.info.world_size,
    )
    state.update(job.state_extra or {})
    for name in ("latest", "best") if is_best else ("latest",):
        save_checkpoint(
            layout.checkpoint(name), model=job.model, optimizer=job.optimizer, state=state
        )
    if publish:
        save_model(layout, job.model, job.make_card(run))
    write_metrics_csv(layout.metrics, run.history)
