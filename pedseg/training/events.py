"""What training reports: progress events for a callback (the CLI's progress bar) and the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pedseg.runfolder.layout import RunLayout

__all__ = ["EventKind", "TrainEvent", "TrainResult"]

EventKind = Literal["run_start", "epoch_start", "step", "epoch_end", "run_end"]


@dataclass(frozen=True)
class TrainEvent:
    """One progress event (rank 0 only).

    ``run_start``: ``epoch`` = first epoch to run, ``epochs`` = last. ``step``: losses
    (``ce``, ``contrastive``, ``total``) and throughput of one step. ``epoch_end``: ``metrics`` holds
    the epoch's mean losses and the validation Dice scores (``val_dice``, ``val_dice/<domain>``,
    ``val_dice/<domain>/<label>``); ``is_best`` when it is the best epoch so far. ``model`` names the
    baseline scheme's per-domain model (``None`` otherwise).
    """

    kind: EventKind
    epoch: int
    epochs: int
    step: int = 0
    steps: int = 0
    global_step: int = 0
    losses: Mapping[str, float] = field(default_factory=dict)
    slices_per_s: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    is_best: bool = False
    model: str | None = None


@dataclass(frozen=True)
class TrainResult:
    """A finished run: where it is and how it went.

    For the baseline scheme ``members`` holds each domain's own result and the top-level fields
    summarise them (``best_metric`` and ``weights_metric`` = means of the members').
    """

    run_dir: Path
    epochs: int
    best_epoch: int
    best_metric: float
    history: tuple[Mapping[str, Any], ...] = ()
    members: Mapping[str, TrainResult] = field(default_factory=dict)
    weights_epoch: int = 0
    """The epoch of the weights the run folder holds (its config's ``keep``: best or final)."""
    weights_metric: float | None = None
    """Their mean validation Dice (for the baseline scheme: the mean of the members')."""

    @property
    def model_path(self) -> Path:
        return RunLayout(self.run_dir).weights
