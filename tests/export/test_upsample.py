"""The int8 graph's up-sampling: 1x1 convolution + pixel shuffle equals the transposed convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pedseg.errors import ModelError
from pedseg.export.upsample import ShuffleUpsample, shuffle_upsampling
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.segmenter import DomainSegmenter


@pytest.mark.parametrize("bias", [True, False])
def test_shuffle_upsample_equals_the_transposed_convolution(bias: bool) -> None:
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(6, 5, kernel_size=2, stride=2, bias=bias)
    x = torch.randn(3, 6, 7, 9)
    with torch.no_grad():
        expected = up(x)
        actual = ShuffleUpsample(up)(x)
    assert actual.shape == expected.shape == (3, 5, 14, 18)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-5)


def test_only_kernel_2_stride_2_is_rewritten() -> None:
    with pytest.raises(ModelError, match="only kernel-2, stride-2 up-sampling"):
        ShuffleUpsample(nn.ConvTranspose2d(4, 4, kernel_size=3, stride=2))


@pytest.mark.parametrize("arch", ["unet", "attention-unet"])
def test_rewritten_segmenter_is_the_same_function(arch: str) -> None:
    torch.manual_seed(1)
    net = build_model(ModelConfig(arch=arch, base_width=4, depth=3), num_classes=[3]).eval()
    segmenter = DomainSegmenter(net, head=0).eval()
    rewritten = shuffle_upsampling(segmenter)
    kinds = {type(m) for m in rewritten.modules()}
    assert nn.ConvTranspose2d not in kinds and ShuffleUpsample in kinds
    assert any(isinstance(m, nn.ConvTranspose2d) for m in segmenter.modules())  # a copy
    x = torch.randn(2, 1, 32, 24)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), segmenter(x), atol=1e-6, rtol=1e-5)
