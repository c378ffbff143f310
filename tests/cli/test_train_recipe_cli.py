"""``pedseg train --recipe / --plan / --budget``: precedence recipe < plan < explicit options."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pedseg.data.postprocess_rules import LabelPostprocess
from pedseg.planning.plan import Plan, write_plan
from pedseg.training.config import TrainConfig
from pedseg.training.recipes import recipe_values
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import phantom_dir, single_thread

DOMAINS = ("ankle", "shoulder")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "1")
    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
    with single_thread():
        yield


def _data(root: Path) -> list[str]:
    return [arg for d in DOMAINS for arg in ("--data", f"{d}={root / d}")]


def _tiny_plan(**changes: Any) -> Plan:
    values: dict[str, Any] = {
        "domains": DOMAINS,
        "content_keys": ("a" * 8, "b" * 8),
        "device": "cpu",
        "machine": "test",
        "budget_s": 3600.0,
        "image_size": 32,
        "arch": "unet",
        "base_width": 4,
        "depth": 3,
        "batch_size": 8,
        "amp": "off",
        "channels_last": False,
        "steps_per_epoch": 2,
        "epochs": 2,
        "total_steps": 4,
        "lr": 2e-3,
        "schedule": "cosine",
        "warmup_steps": 1,
        "min_lr_ratio": 0.01,
        "seg_loss": "dice-ce",
        "step_seconds": 0.01,
        "expected_seconds": 60.0,
        "postprocess": (LabelPostprocess("ankle", "tibia", 1, 10.0, "test"),),
        "reasons": (("image size", "test"),),
    }
    values.update(changes)
    return Plan(**values)


def test_the_paper_recipe_is_the_papers_configuration() -> None:
    config = TrainConfig(domains=DOMAINS, **recipe_values("paper"))
    assert (config.seg_loss, config.lr, config.schedule, config.warmup_steps) == (
        "ce",
        1e-4,
        "constant",
        0,
    )
    assert (config.batch_size, config.epochs, config.image_size) == (32, 30, (256, 256))
    assert (config.base_width, config.depth, config.scheme) == (32, 5, "dsl-contrastive")
    assert (config.tau, config.lam, config.augment) == (0.1, 0.1, True)
    assert config.keep == "best"  # one examination per dataset retained for validation
    ours = TrainConfig(domains=DOMAINS, **recipe_values("pedseg"))
    assert (ours.schedule, ours.keep) == ("cosine", "final")


def _card_training(run: Path) -> dict[str, Any]:
    return json.loads((run / "model.json").read_text())["training"]


def test_plan_then_explicit_options(
    pedseg: Runner, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    root = phantom_dir(tmp_path_factory)
    plan = write_plan(_tiny_plan(), tmp_path / "plan.json")
    run = tmp_path / "run"
    args = ["train", "--domains", *DOMAINS, *_data(root), "--plan", str(plan), "-q"]
    result = pedseg(*args, "--out", str(run), "--epochs", "1", "--device", "cpu")
    assert result.code == 0, result.err
    training = _card_training(run)
    assert (training["image_size"], training["base_width"], training["lr"]) == ([32, 32], 4, 2e-3)
    assert training["schedule"] == "cosine" and training["epochs"] == 1  # --epochs beats the plan
    assert training["keep"] == "final"  # the recipe's
    kept = pedseg(*args, "--out", str(tmp_path / "best"), "--epochs", "1", "--keep", "best")
    assert kept.code == 0, kept.err
    assert _card_training(tmp_path / "best")["keep"] == "best"
    bad = pedseg(*args, "--out", str(tmp_path / "bad"), "--keep", "middle")
    assert "keep must be one of final, best, got 'middle'" in one_line_error(bad)
    assert not (tmp_path / "bad").exists()
    refused = pedseg(*args, "--out", str(tmp_path / "r2"), "--budget", "1h")
    assert "--plan and --budget both plan the run" in one_line_error(refused)
    other = write_plan(_tiny_plan(domains=("ankle", "pelvis")), tmp_path / "other.json")
    wrong = pedseg("train", "--domains", *DOMAINS, *_data(root), "--plan", str(other), "-q")
    assert "the plan was made for domains ankle, pelvis" in one_line_error(wrong)


def test_budget_plans_around_explicit_options_and_fits_the_run(
    pedseg: Runner,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pedseg.planning.api as api

    seen: dict[str, Any] = {}

    def fake_plan_run(specs: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return api.PlanOutcome(
            plan=_tiny_plan(budget_s=kwargs["budget_s"]),
            fingerprints=(),
            measured=(),
            times_file=tmp_path / "t.json",
        )

    monkeypatch.setattr(api, "plan_run", fake_plan_run)
    root = phantom_dir(tmp_path_factory)
    run = tmp_path / "run"
    result = pedseg(
        "train",
        "--domains",
        *DOMAINS,
        *_data(root),
        "--budget",
        "10s",
        "--base-width",
        "4",
        "--out",
        str(run),
        "--device",
        "cpu",
        "-q",
    )
    assert result.code == 0, result.err
    assert seen["budget_s"] == 10.0 and seen["overrides"] == {"base_width": 4}
    state = json.loads((run / "checkpoints" / "latest" / "state.json").read_text())
    assert state["fitted_epochs"] is not None  # the run's epochs were fitted to the budget
