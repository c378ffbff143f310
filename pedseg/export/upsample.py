"""Transposed-convolution upsampling rewritten for int8 graphs: a 1x1 convolution + pixel shuffle.

A ``ConvTranspose2d`` with kernel 2 and stride 2 (the UNet's up-sampling, no padding, no dilation)
maps every input pixel to an independent 2x2 output block: output channel ``c`` at block position
``(i, j)`` is ``sum_k W[k, c, i, j] x_k + b_c``. That is a 1x1 convolution to ``4C`` channels
(channel ``4c + 2i + j``) followed by ``pixel_shuffle(2)`` (ONNX ``DepthToSpace``, mode ``CRD``).
onnxruntime runs that convolution in int8 and moves int8 data through ``DepthToSpace``, where a
quantised transposed convolution would run in float between a dequantise and a quantise.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from pedseg.errors import ModelError
from pedseg.models.unet import UpBlock

__all__ = ["ShuffleUpsample", "shuffle_upsampling"]


class ShuffleUpsample(nn.Module):
    """The exact equivalent of a kernel-2, stride-2 ``ConvTranspose2d`` (module docstring)."""

    def __init__(self, up: nn.ConvTranspose2d) -> None:
        super().__init__()
        if (
            tuple(up.kernel_size) != (2, 2)
            or tuple(up.stride) != (2, 2)
            or tuple(up.padding) != (0, 0)
            or tuple(up.output_padding) != (0, 0)
            or tuple(up.dilation) != (1, 1)
            or up.groups != 1
        ):
            raise ModelError(
                f"cannot export {up} in int8: only kernel-2, stride-2 up-sampling is supported"
            )
        cin, cout = up.in_channels, up.out_channels
        weight = up.weight.detach()  # (cin, cout, 2, 2)
        bias = up.bias.detach() if up.bias is not None else torch.zeros(cout, dtype=weight.dtype)
        self.conv = nn.Conv2d(cin, 4 * cout, kernel_size=1, bias=True)
        self.conv.weight = nn.Parameter(
            weight.permute(1, 2, 3, 0).reshape(4 * cout, cin, 1, 1).clone(), requires_grad=False
        )
        self.conv.bias = nn.Parameter(bias.repeat_interleave(4).clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.pixel_shuffle(self.conv(x), 2)


def shuffle_upsampling(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose UNet up-sampling layers are :class:`ShuffleUpsample`."""
    out = copy.deepcopy(module)
    for block in out.modules():
        if isinstance(block, UpBlock) and isinstance(block.up, nn.ConvTranspose2d):
            # The same computation in another module: the block's forward only calls it.
            block.up = ShuffleUpsample(block.up)  # type: ignore[assignment]
    return out
