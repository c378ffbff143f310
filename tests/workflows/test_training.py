"""``resolve_train_config``: recipe < plan < explicit options, and when the budget is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.errors import ConfigError
from pedseg.planning.plan import write_plan
from pedseg.training.recipes import recipe_values
from pedseg.workflows.training import TrainRequest, resolve_train_config
from tests.cli.test_train_recipe_cli import DOMAINS, _tiny_plan

FIXED = {"device": "cpu", "seed": 0, "epochs": None, "lr": None}


def test_the_recipe_alone_gives_its_values_and_no_budget() -> None:
    config, seconds = resolve_train_config(
        DOMAINS, [], TrainRequest(recipe="paper", fixed=FIXED, explicit={})
    )
    assert config.lr == recipe_values("paper")["lr"]
    assert config.domains == DOMAINS
    assert seconds is None


def test_a_plan_overrides_the_recipe_and_explicit_options_override_the_plan(
    tmp_path: Path,
) -> None:
    plan = write_plan(_tiny_plan(lr=2e-3, batch_size=8), tmp_path / "plan.json")
    request = TrainRequest(plan=plan, fixed=FIXED, explicit={"batch_size": 4})
    config, seconds = resolve_train_config(DOMAINS, [], request)
    assert (config.lr, config.batch_size, config.base_width) == (2e-3, 4, 4)
    assert seconds == 3600.0


def test_explicit_epochs_are_kept_so_no_budget_refit(tmp_path: Path) -> None:
    plan = write_plan(_tiny_plan(), tmp_path / "plan.json")
    request = TrainRequest(plan=plan, fixed=FIXED, explicit={"epochs": 7})
    config, seconds = resolve_train_config(DOMAINS, [], request)
    assert config.epochs == 7
    assert seconds is None


def test_plan_and_budget_together_are_refused(tmp_path: Path) -> None:
    plan = write_plan(_tiny_plan(), tmp_path / "plan.json")
    request = TrainRequest(plan=plan, budget="1h", fixed=FIXED, explicit={})
    with pytest.raises(ConfigError, match="--plan and --budget"):
        resolve_train_config(DOMAINS, [], request)
