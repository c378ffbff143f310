"""What a checkpoint records about its run, and the refusal to resume a run that changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pedseg import __version__
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, TrainingError
from pedseg.training.config import TrainConfig, resumable_changes

__all__ = ["RunState", "check_resumable", "check_validation_cases"]


@dataclass
class RunState:
    """The mutable progress of one model's training (saved in every checkpoint's ``state.json``)."""

    epoch: int = 0
    global_step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    fitted_epochs: int | None = None
    """The epochs a wall-clock budget fitted the run to (``None``: the config's); fixed once,
    after the first epoch, and kept by a resume so that the schedule's horizon never moves."""
    weights_epoch: int = 0
    """The epoch of the weights the run folder holds (``config.keep``: the best or the last)."""
    weights_metric: float | None = None
    """Their mean validation Dice."""

    def to_json(
        self,
        *,
        config: TrainConfig,
        specs: Sequence[DomainSpec],
        val_cases: Mapping[str, Sequence[str]],
        world_size: int,
    ) -> dict[str, Any]:
        return {
            "pedseg_version": __version__,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_metric": self.best_metric if self.best_epoch else None,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "fitted_epochs": self.fitted_epochs,
            "weights_epoch": self.weights_epoch,
            "weights_metric": self.weights_metric,
            "config": config.to_dict(),
            "descriptors": {s.name: s.to_dict(include_data=False) for s in specs},
            "descriptor_hashes": {s.name: s.content_hash() for s in specs},
            "val_cases": {name: list(ids) for name, ids in val_cases.items()},
            "world_size": world_size,
        }

    @classmethod
    def from_json(cls, state: Mapping[str, Any]) -> RunState:
        best = state.get("best_metric")
        best_epoch = int(state.get("best_epoch", 0))
        # a checkpoint of an older pedseg: its run folder held the best epoch's weights
        weights = state.get("weights_metric", best)
        return cls(
            epoch=int(state["epoch"]),
            global_step=int(state["global_step"]),
            best_metric=float("-inf") if best is None else float(best),
            best_epoch=best_epoch,
            weights_epoch=int(state.get("weights_epoch", best_epoch)),
            weights_metric=None if weights is None else float(weights),
            history=[dict(row) for row in state.get("history", [])],
            fitted_epochs=None
            if state.get("fitted_epochs") is None
            else int(state["fitted_epochs"]),
        )


def check_resumable(
    state: Mapping[str, Any],
    *,
    out: Path,
    config: TrainConfig,
    specs: Sequence[DomainSpec],
) -> None:
    """Raise :class:`TrainingError` naming the differences between the run and its checkpoint."""
    try:
        saved = TrainConfig.from_dict(state["config"])
    except (KeyError, ConfigError) as exc:
        raise TrainingError(
            f"cannot resume {out}: its checkpoint's config is unreadable ({exc})"
        ) from exc
    problems = saved.differences(config, ignore=resumable_changes(saved))
    old_descriptors: Mapping[str, Any] = state.get("descriptors", {})
    old_hashes: Mapping[str, Any] = state.get("descriptor_hashes", {})
    for spec in specs:
        if old_hashes.get(spec.name) == spec.content_hash():
            continue
        old = old_descriptors.get(spec.name, {})
        new = spec.to_dict(include_data=False)
        changed = [
            f"{key} was {old.get(key)!r}, now {new.get(key)!r}"
            for key in new
            if old.get(key) != new.get(key)
        ] or ["content hash differs"]
        problems.append(f"domain {spec.name!r} descriptor changed ({'; '.join(changed)})")
    if problems:
        raise TrainingError(
            f"cannot resume {out}: {'; '.join(problems)}; start a new run to change them"
        )


def check_validation_cases(
    state: Mapping[str, Any], *, out: Path, val_cases: Mapping[str, Sequence[str]]
) -> None:
    """Refuse to resume when the held-out cases differ (the dataset's cases changed)."""
    old = {k: list(v) for k, v in state.get("val_cases", {}).items()}
    new = {k: list(v) for k, v in val_cases.items()}
    changed = sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))
    if changed:
        raise TrainingError(
            f"cannot resume {out}: the validation cases of domain {changed[0]!r} changed (its "
            "dataset's cases differ from the checkpoint's); start a new run"
        )
