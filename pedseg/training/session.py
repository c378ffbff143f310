"""The state of one model's training and the end of an epoch: validation, checkpoints, artifacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from pedseg.domains.spec import DomainSpec
from pedseg.errors import TrainingError
from pedseg.io.atomic import atomic_path
from pedseg.models.build import ModelConfig
from pedseg.training import distributed as dist_utils
from pedseg.training.artifacts import (
    file_sha256,
    model_card,
    plot_curves,
    write_json,
    write_metrics_csv,
)
from pedseg.training.checkpoint import save_checkpoint, state_tensors
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo
from pedseg.training.events import EventKind, TrainEvent
from pedseg.training.prepare import DomainData
from pedseg.training.resume import RunState
from pedseg.training.validate import validate

__all__ = ["Session", "finish_epoch", "finish_run"]

logger = logging.getLogger(__name__)
VALIDATION_BATCH = 16
CURVES_EVERY_EPOCH_AFTER_S = 20.0
"""Redraw ``curves.png`` after every epoch only when epochs are this slow (drawing costs ~1 s);
otherwise it is drawn when the run ends (:func:`finish_run`)."""


@dataclass
class Session:
    """Everything one model's epoch loop needs."""

    config: TrainConfig
    specs: Sequence[DomainSpec]
    domains: Sequence[DomainData]
    out: Path
    model: nn.Module
    model_config: ModelConfig
    optimizer: torch.optim.Optimizer
    run: RunState
    info: DistInfo
    device: torch.device
    image_size: tuple[int, int]
    channels_last: bool
    amp: torch.dtype | None
    callback: Callable[[TrainEvent], None] | None
    member: str | None
    val_cases: Mapping[str, Sequence[str]]

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if self.callback is not None:
            self.callback(
                TrainEvent(
                    kind=kind,
                    epochs=self.config.epochs,
                    global_step=self.run.global_step,
                    model=self.member,
                    **fields,
                )
            )


def _check_finite_weights(model: nn.Module, epoch: int) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise TrainingError(
                f"non-finite weights ({name}) after epoch {epoch}; not saving them; the "
                "checkpoints hold the last finite epoch; lower the learning rate"
            )


def finish_epoch(
    session: Session,
    row: dict[str, float | int],
    *,
    started: float,
    train_seconds: float,
    steps: int,
) -> None:
    """Validate, record the epoch and (rank 0) write checkpoints and artifacts."""
    run, config, epoch = session.run, session.config, int(row["epoch"])
    _check_finite_weights(session.model, epoch)
    is_best = False
    if session.info.is_main:
        metrics = validate(
            session.model,
            session.domains,
            device=session.device,
            batch_size=VALIDATION_BATCH,
            channels_last=session.channels_last,
            amp=session.amp,
        )
        row.update(metrics)
        row["lr"] = float(session.optimizer.param_groups[0]["lr"])
        row["seconds"] = time.perf_counter() - started
        row["slices_per_s"] = steps * config.batch_size / train_seconds
        run.epoch = epoch
        run.history.append(dict(row))
        # Ties go to the later epoch: while validation Dice is still flat (often 0 early on for small
        # structures), the most trained weights are the better "best", not epoch 1's.
        is_best = metrics["val_dice"] >= run.best_metric
        if is_best:
            run.best_metric = metrics["val_dice"]
            run.best_epoch = epoch
        _write_epoch(session, is_best=is_best)
        if row["seconds"] >= CURVES_EVERY_EPOCH_AFTER_S:
            plot_curves(session.out / "curves.png", run.history)
        logger.info(
            "epoch %d/%d: loss %.4f, val Dice %.4f%s",
            epoch,
            config.epochs,
            row["loss_total"],
            metrics["val_dice"],
            " (best)" if is_best else "",
        )
    else:
        run.epoch = epoch
    dist_utils.barrier(session.info)
    session.emit("epoch_end", epoch=epoch, steps=steps, metrics=dict(row), is_best=is_best)


def _write_epoch(session: Session, *, is_best: bool) -> None:
    run, out = session.run, session.out
    state = run.to_json(
        config=session.config,
        specs=session.specs,
        val_cases=session.val_cases,
        world_size=session.info.world_size,
    )
    checkpoints = out / "checkpoints"
    save_checkpoint(
        checkpoints / "latest", model=session.model, optimizer=session.optimizer, state=state
    )
    if is_best:
        save_checkpoint(
            checkpoints / "best", model=session.model, optimizer=session.optimizer, state=state
        )
        weights = out / "model.safetensors"
        with atomic_path(weights) as tmp:
            save_file(state_tensors(session.model), str(tmp))
        card = model_card(
            config=session.config,
            specs=session.specs,
            model_config=session.model_config.to_dict(),
            mappings=[d.mapping for d in session.domains],
            image_size=session.image_size,
            model_sha256=file_sha256(weights),
            best_epoch=run.best_epoch,
            best_metric=run.best_metric,
        )
        write_json(out / "model.json", card)
    write_metrics_csv(out / "metrics.csv", run.history)


def finish_run(session: Session) -> None:
    """Draw the training curves (rank 0)."""
    if session.info.is_main and session.run.history:
        plot_curves(session.out / "curves.png", session.run.history)
