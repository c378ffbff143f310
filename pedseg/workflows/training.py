"""``pedseg train``'s configuration: recipe, then plan (read, or made for a budget), then the
options the user gave, composed into one frozen :class:`~pedseg.training.config.TrainConfig`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError
from pedseg.training.config import TrainConfig
from pedseg.training.recipes import compose

__all__ = ["TrainRequest", "resolve_train_config"]


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """What the user asked for, before the recipe and the plan fill the rest.

    Attributes:
        recipe: the named defaults (``pedseg`` or ``paper``).
        plan: a ``plan.json`` to train as, or ``None``.
        budget: a budget such as ``"1h"`` to plan for now, or ``None`` (not with ``plan``).
        fixed: every option's value (given or defaulted), by TrainConfig field name.
        explicit: the options the user gave, by TrainConfig field name (they win over everything).
    """

    recipe: str = "pedseg"
    plan: Path | None = None
    budget: str | None = None
    fixed: Mapping[str, Any]
    explicit: Mapping[str, Any]


def resolve_train_config(
    names: Sequence[str],
    specs: Sequence[DomainSpec],
    request: TrainRequest,
    *,
    cache_root: Path | None = None,
) -> tuple[TrainConfig, float | None]:
    """The run's config and the budget (seconds) its epochs are refitted to during the run.

    The budget is ``None`` without ``--plan``/``--budget``, and also when the user fixed the
    epochs (``--epochs`` or ``--steps-per-epoch``): the user's epochs are kept as given.

    Raises:
        ConfigError: ``plan`` and ``budget`` both given, or a bad budget / plan / option value.
    """
    explicit = dict(request.explicit)
    planned: dict[str, Any] = {}
    seconds: float | None = None
    if request.plan is not None and request.budget is not None:
        raise ConfigError("--plan and --budget both plan the run; give one of them")
    if request.plan is not None or request.budget is not None:
        from pedseg.planning.plan import read_plan, train_kwargs

        if request.plan is not None:
            chosen = read_plan(request.plan)
        else:
            from pedseg.planning.api import plan_run
            from pedseg.planning.budget import parse_budget
            from pedseg.planning.plan import OVERRIDABLE

            chosen = plan_run(
                list(specs),
                budget_s=parse_budget(request.budget or ""),
                device=str(request.fixed.get("device", "auto")),
                cache_root=cache_root,
                overrides={k: v for k, v in explicit.items() if k in OVERRIDABLE},
            ).plan
        planned = train_kwargs(chosen, domains=list(names))
        if not {"epochs", "steps_per_epoch"} & set(explicit):
            seconds = chosen.budget_s
    values = compose(request.recipe, defaults=dict(request.fixed), explicit=explicit, plan=planned)
    values["domains"] = tuple(names)
    return TrainConfig(**values), seconds
