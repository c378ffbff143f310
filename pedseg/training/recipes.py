"""Training recipes: the values a run starts from, before a plan and the user's own options.

* ``paper``: Boutillon et al. 2021 exactly: the cross-entropy of Eq. 2 (+ the contrastive term),
  Adam 1e-4 at a constant rate, batch 32, 30 epochs, 256x256 slices, UNet width 32 (5 levels);
  the weights of the best validation epoch (one examination per dataset retained for validation).
* ``pedseg`` (the default): what pedseg measured to converge in the steps a user has
  (``benchmarks/RESULTS.md``): Eq. 2 cross-entropy plus a soft Dice term, Adam 1e-3 with a short
  linear warm-up and a cosine decay to 1 % of the rate at the end of the run, keeping the final
  weights (not the best validation epoch's); sizes as the paper (or the descriptors'). A deviation
  from the paper, documented in README and docs/planning.md.

Precedence, lowest first: the recipe, a plan (``--plan``/``--budget``), options given explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pedseg.errors import UnknownNameError

__all__ = ["DEFAULT_RECIPE", "RECIPES", "compose", "recipe_values"]

RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "seg_loss": "ce",
        "lr": 1e-4,
        "schedule": "constant",
        "warmup_steps": 0,
        "min_lr_ratio": 0.0,
        "batch_size": 32,
        "epochs": 30,
        "image_size": (256, 256),
        "base_width": 32,
        "depth": 5,
        "keep": "best",
    },
    "pedseg": {
        "seg_loss": "dice-ce",
        "lr": 1e-3,
        "schedule": "cosine",
        "warmup_steps": 50,
        "min_lr_ratio": 0.01,
        "batch_size": 32,
        "epochs": 30,
        "image_size": None,
        "base_width": 32,
        "depth": 5,
        "keep": "final",
    },
}
DEFAULT_RECIPE = "pedseg"


def recipe_values(name: str) -> dict[str, Any]:
    """The :class:`~pedseg.training.config.TrainConfig` values of recipe ``name``."""
    if name not in RECIPES:
        raise UnknownNameError("recipe", name, RECIPES)
    return dict(RECIPES[name])


def compose(
    recipe: str,
    *,
    defaults: Mapping[str, Any],
    explicit: Mapping[str, Any],
    plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    r""":class:`~pedseg.training.config.TrainConfig` values, lowest precedence first: the recipe,
    the command's ``defaults`` for what the recipe leaves open (``None`` values are dropped), a
    ``plan``'s values, then the options given ``explicit``\ ly."""
    values = recipe_values(recipe)
    values.update({k: v for k, v in defaults.items() if v is not None and k not in values})
    values.update(plan or {})
    values.update(explicit)
    return values
