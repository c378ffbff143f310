"""Step-based learning-rate schedules: a pure function of (global step, total steps).

``step`` counts the optimisation steps already taken (0 for the first step of a run), ``total`` is
the run's number of steps (``epochs * steps_per_epoch``). The learning rate of step ``s`` is
``lr * factor(s, total)``:

* ``constant`` (the paper's): 1 (warm-up still applies when ``warmup_steps > 0``);
* warm-up, every schedule: for ``s < w`` (``w = min(warmup_steps, total)``) the factor rises
  linearly, ``(s + 1) / (w + 1)``, so the first step uses ``lr / (w + 1)`` and step ``w`` is the
  first at the full rate;
* ``cosine``: after the warm-up, ``m + (1 - m) * (1 + cos(pi * p)) / 2``;
* ``poly`` (nnU-Net's, power 0.9): after the warm-up, ``m + (1 - m) * (1 - p) ** power``;

with ``p = (s - w) / (total - w)`` in ``[0, 1)`` the progress of the decay and ``m = min_lr_ratio``
the floor the decay approaches at the end of the run. Nothing depends on what happened before
``s``, so a run resumed at any step gets exactly the learning rates of an uninterrupted one, as
long as ``total`` is unchanged: the schedule's parameters are :class:`TrainConfig` fields that a
resume refuses to change, and with a decaying schedule ``epochs`` may not change either (see
:func:`pedseg.training.config.resumable_changes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pedseg.errors import ConfigError
from pedseg.training.config import SCHEDULES, TrainConfig

if TYPE_CHECKING:
    import torch

__all__ = ["SCHEDULES", "Schedule", "apply_lr", "lr_factor", "run_steps", "schedule_of"]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule (see the module docstring for the formulas)."""

    kind: str = "constant"
    lr: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    power: float = 0.9

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int):
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not _is_number(self.min_lr_ratio) or not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not _is_number(self.power) or self.power <= 0:
            raise ConfigError(f"poly_power must be a finite number > 0, got {self.power!r}")

    def factor(self, step: int, total: int) -> float:
        """The multiplier of ``lr`` at ``step`` of a run of ``total`` steps."""
        return lr_factor(
            step,
            total,
            kind=self.kind,
            warmup_steps=self.warmup_steps,
            min_lr_ratio=self.min_lr_ratio,
            power=self.power,
        )

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of ``step`` (0-based) of a run of ``total`` steps."""
        return self.lr * self.factor(step, total)


def lr_factor(
    step: int,
    total: int,
    *,
    kind: str,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    power: float = 0.9,
) -> float:
    """The learning-rate multiplier of ``step`` of ``total`` steps; see the module docstring."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ConfigError(f"total steps must be an integer >= 1, got {total!r}")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < total:
        raise ConfigError(f"step must be an integer in [0, {total}), got {step!r}")
    warm = min(warmup_steps, total)
    if step < warm:
        return (step + 1) / (warm + 1)
    if kind == "constant":
        return 1.0
    progress = (step - warm) / (total - warm)
    if kind == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "poly":
        decay = (1.0 - progress) ** power
    else:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def schedule_of(config: TrainConfig) -> Schedule:
    """The :class:`Schedule` a :class:`~pedseg.training.config.TrainConfig` describes."""
    return Schedule(
        kind=config.schedule,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=config.min_lr_ratio,
        power=config.poly_power,
    )


def run_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """The schedule's horizon: ``epochs * steps_per_epoch``."""
    return config.epochs * steps_per_epoch


def apply_lr(
    optimizer: torch.optim.Optimizer, config: TrainConfig, global_step: int, total_steps: int
) -> float:
    """Set every param group's ``lr`` for the step about to be taken; returns the rate.

    Call it before ``optimizer.step()`` with ``global_step`` = the steps already taken.
    """
    rate = schedule_of(config).lr_at(global_step, total_steps)
    for group in optimizer.param_groups:
        group["lr"] = rate
    return rate
