"""Model configuration, the architecture registry, parameter and FLOP counts."""

from __future__ import annotations

import dataclasses

import pytest

from pedseg.errors import ConfigError, UnknownNameError
from pedseg.models.build import (
    ARCHITECTURES,
    ModelConfig,
    build_model,
    count_flops,
    count_parameters,
)
from pedseg.models.unet import MultiDomainUNet


def test_defaults_follow_the_paper() -> None:
    config = ModelConfig()
    assert config.to_dict() == {
        "arch": "unet",
        "base_width": 32,
        "depth": 5,
        "in_channels": 1,
        "norm": "dsbn",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.depth = 3  # type: ignore[misc]


def test_dict_round_trip_and_partial_dicts() -> None:
    config = ModelConfig(arch="attention-unet", base_width=8, depth=3, in_channels=2, norm="bn")
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict({"depth": 4}) == ModelConfig(depth=4)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown model config key.*widht.*known: arch"):
        ModelConfig.from_dict({"widht": 3})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"base_width": 0}, "base_width must be >= 1, got 0"),
        ({"depth": 1}, "depth must be >= 2, got 1"),
        ({"in_channels": 0}, "in_channels must be >= 1, got 0"),
        ({"base_width": "32"}, "base_width must be an integer, got '32'"),
        ({"depth": True}, "depth must be an integer, got True"),
        ({"norm": "group"}, "norm must be one of dsbn, bn, got 'group'"),
        ({"arch": 3}, "arch must be a string, got 3"),
    ],
)
def test_validation_messages(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(fields)


def test_unknown_architecture_suggests_the_closest() -> None:
    with pytest.raises(UnknownNameError, match="unknown architecture 'attention_unet'") as info:
        ModelConfig(arch="attention_unet")
    assert "Did you mean 'attention-unet'?" in str(info.value)


def test_registry_and_build() -> None:
    assert set(ARCHITECTURES) == {"unet", "attention-unet"}
    for arch, attention in (("unet", False), ("attention-unet", True)):
        config = ModelConfig(arch=arch, base_width=4, depth=3, norm="bn")
        model = build_model(config, num_classes=[3, 4])
        assert isinstance(model, MultiDomainUNet)
        assert model.attention is attention and model.norm == "bn"
        assert model.num_classes == (3, 4) and model.widths == (4, 8, 16)


def test_default_model_reproduces_the_design_numbers() -> None:
    """DESIGN.md: 7.76 M parameters and 24.1 GFLOP per 256x256 slice forward."""
    model = build_model(ModelConfig(norm="bn"), num_classes=[4]).train()
    assert round(count_parameters(model) / 1e6, 2) == 7.76
    assert round(count_flops(model, 256) / 1e9, 1) == 24.1
    assert model.training  # mode restored
    assert not model.encoders[0].conv1._forward_hooks  # hooks removed


def test_flops_of_a_tiny_model_by_hand() -> None:
    model = MultiDomainUNet(num_classes=[3], base_width=2, depth=2)
    h = w = 8
    expected_macs = (
        (1 * 2 + 2 * 2) * 9 * h * w  # level 0 encoder block
        + (2 * 4 + 4 * 4) * 9 * (h // 2) * (w // 2)  # bottleneck block
        + 4 * 2 * 4 * (h // 2) * (w // 2)  # 2x2 transposed conv, per input position
        + (4 * 2 + 2 * 2) * 9 * h * w  # decoder block
        + 2 * 3 * h * w  # 1x1 head
    )
    assert count_flops(model, (h, w)) == 2 * expected_macs
    assert count_flops(model, 16) == 4 * 2 * expected_macs
    with pytest.raises(ConfigError, match="multiples of 2 for depth 2, got 8x7"):
        count_flops(model, (8, 7))


def test_count_trainable_parameters() -> None:
    model = MultiDomainUNet(num_classes=[2], base_width=2, depth=2)
    total = count_parameters(model)
    model.heads.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - (2 * 2 + 2)


def test_builders_are_entry_points_loaded_on_use() -> None:
    from pedseg.errors import ConfigError
    from pedseg.models.config import Architecture

    assert ARCHITECTURES["unet"].builder == "pedseg.models.build:build_unet"
    with pytest.raises(ConfigError, match="builder must be 'module:function', got 'nocolon'"):
        Architecture("x", "nocolon")
    with pytest.raises(ConfigError, match="'pedseg.models.build:missing' cannot be loaded"):
        Architecture("x", "pedseg.models.build:missing").load()
    with pytest.raises(ConfigError, match="is not callable"):
        Architecture("x", "pedseg.models.config:NORMS").load()


def test_the_configuration_and_a_card_need_no_torch() -> None:
    """A run's card holds a ModelConfig; reading it (and predicting with ONNX) imports no torch."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pedseg.models import ModelConfig\n"
        "import pedseg.models.mapping, pedseg.runfolder.card, pedseg.runfolder.index\n"
        "ModelConfig.from_dict({'arch': 'attention-unet', 'base_width': 4})\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
