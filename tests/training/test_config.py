"""TrainConfig: defaults (the paper's), validation messages, strict dict round trip, differences."""

from __future__ import annotations

from typing import Any

import pytest

from pedseg.errors import ConfigError
from pedseg.training.config import RESUMABLE_CHANGES, TrainConfig


def test_defaults_follow_the_paper() -> None:
    config = TrainConfig(domains=("ankle", "shoulder"))
    assert config.scheme == "dsl-contrastive"
    assert (config.epochs, config.batch_size, config.lr) == (30, 32, 1e-4)
    assert (config.tau, config.lam) == (0.1, 0.1)
    assert (config.base_width, config.depth, config.image_size) == (32, 5, (256, 256))
    assert config.amp == "auto" and config.channels_last is None and config.compile is False
    assert config.seg_loss == "ce"  # Eq. 2 alone; dice-ce is an opt-in deviation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 3}, r"batch_size must be >= 2 per domain \(got 3 for 2 domains\)"),
        ({"scheme": "dsl+contrastive"}, "scheme must be one of"),
        ({"arch": "resnet"}, "arch must be one of unet, attention-unet"),
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"lr": 0.0}, r"lr must be in \(0, inf\], got 0.0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
        ({"fg_fraction": 1.5}, r"fg_fraction must be in \[0, 1\], got 1.5"),
        ({"amp": "fp16"}, "amp must be one of auto, bf16, off"),
        ({"seg_loss": "dice"}, "seg_loss must be one of ce, dice-ce, got 'dice'"),
        ({"device": "tpu"}, "device must be"),
        ({"image_size": (30,)}, "image_size must be two integers"),
        ({"domains": ("ankle", "ankle")}, "must not repeat"),
        ({"domains": ()}, "at least one domain"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be >= 1"),
        ({"val_cases": {"knee": ["a"]}}, "val_cases names domain 'knee'"),
        ({"val_cases": {"ankle": []}}, "val_cases must map"),
        ({"epochs": True}, "epochs must be an integer"),
    ],
)
def test_validation_messages(changes: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"domains": ("ankle", "shoulder"), **changes}
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_baseline_needs_two_per_model_only() -> None:
    assert TrainConfig(domains=("a", "b", "c"), scheme="baseline", batch_size=2).batch_size == 2
    with pytest.raises(ConfigError, match=r"got 4 for 3 domains"):
        TrainConfig(domains=("a", "b", "c"), batch_size=4)


def test_dict_round_trip_and_strictness() -> None:
    config = TrainConfig(
        domains=("ankle", "shoulder"),
        image_size=None,
        val_cases={"ankle": ["ankle_001"]},
        channels_last=False,
    )
    raw = config.to_dict()
    assert raw["val_cases"] == {"ankle": ["ankle_001"]}
    assert TrainConfig.from_dict(raw) == config
    assert "val_cases" not in config.to_dict(include_val_cases=False)
    assert config.validation_cases("ankle") == ("ankle_001",)
    assert config.validation_cases("shoulder") == ()
    with pytest.raises(ConfigError, match="unknown training config key 'learning_rate'"):
        TrainConfig.from_dict({**raw, "learning_rate": 1.0})
    with pytest.raises(ConfigError, match="needs 'domains'"):
        TrainConfig.from_dict({"epochs": 3})


def test_differences() -> None:
    a = TrainConfig(domains=("ankle", "shoulder"))
    b = TrainConfig(domains=("ankle", "shoulder"), lr=1e-3, epochs=50, num_workers=2)
    assert a.differences(b, ignore=RESUMABLE_CHANGES) == ["lr was 0.0001, now 0.001"]
    assert "epochs was 30, now 50" in a.differences(b)
