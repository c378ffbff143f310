"""Fixtures for the training tests: tiny phantom domains, a shared slice cache, a tiny config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.training.config import TrainConfig

DOMAINS = ("ankle", "shoulder")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 48x48x16 phantom cases per domain (written once per session)."""
    root = tmp_path_factory.mktemp("phantoms")
    synth_dataset(root, domains=DOMAINS, cases=3, seed=0, config=PhantomConfig(shape=(48, 48, 16)))
    return root


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One slice cache for the whole session (built by the first test that trains)."""
    return tmp_path_factory.mktemp("slice_cache")


@pytest.fixture
def specs(phantom_root: Path, tmp_path: Path) -> list[DomainSpec]:
    registry = DomainRegistry(home=tmp_path / "registry")
    return [registry.get(name).with_data_root(phantom_root / name) for name in DOMAINS]


@pytest.fixture
def tiny_config() -> Callable[..., TrainConfig]:
    """A factory of tiny CPU configs (image 32, width 4, depth 3) with keyword overrides."""

    def make(**changes: Any) -> TrainConfig:
        values: dict[str, Any] = {
            "domains": DOMAINS,
            "epochs": 2,
            "batch_size": 8,
            "image_size": (32, 32),
            "base_width": 4,
            "depth": 3,
            "lr": 3e-3,
            "steps_per_epoch": 3,
            "device": "cpu",
            "amp": "off",  # fp32 NCHW: no precision measurement (tests/training/test_precision.py)
            "channels_last": False,
        }
        values.update(changes)
        return TrainConfig(**values)

    return make


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing curves.png (about a second per run); tests that check it do not use this."""
    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
