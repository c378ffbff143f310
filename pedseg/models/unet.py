"""The multi-domain 2D UNet (paper Fig. 2) and its attention-gated variant (Att-UNet).

Shared convolutions, a norm layer per domain (DSBN, :mod:`pedseg.models.dsbn`) or one shared norm
(``norm="bn"``, the ``joint`` scheme), and a 1x1 head per domain (:mod:`pedseg.models.heads`).

* Encoder: ``depth`` resolution levels of widths ``base_width * 2**i``; each level is a conv block
  (2 x [3x3 conv without bias, norm, ReLU]); levels are joined by 2x2 max pooling.
* Decoder: per level, a 2x2 transposed convolution (stride 2, with bias), optionally an additive
  attention gate on the skip connection, concatenation ``[skip, upsampled]`` and a conv block.
* Embedding ``z``: global max pooling of the bottleneck (the deepest encoder level), of
  ``embedding_dim = base_width * 2**(depth - 1)`` (512 by default). It depends on the encoder only,
  so a loss on it (the supervised contrastive term) produces gradients in the encoder only.

The attention gate follows Oktay et al. (2018) in its common same-resolution form: the gating
signal ``g`` is the upsampled decoder feature (same grid as the skip ``x``),
``alpha = sigmoid(norm(psi(relu(norm(W_g g) + norm(W_x x)))))`` and the skip becomes ``x * alpha``;
there is no interpolation, so it exports cleanly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pedseg.errors import ConfigError, ModelError
from pedseg.models.dsbn import (
    ChunkedNorm,
    Chunks,
    InitKind,
    NormKind,
    Route,
    check_chunks,
    make_norm,
)
from pedseg.models.heads import DomainHeads, check_num_classes

__all__ = ["AttentionGate", "ConvBlock", "DomainView", "MultiDomainUNet", "SegOutput", "UpBlock"]

NormFactory = Callable[[int], ChunkedNorm]


class SegOutput(NamedTuple):
    """Output of :meth:`MultiDomainUNet.forward`."""

    logits: list[Tensor]
    """Raw logits per chunk, ``(count, C_k, H, W)``, in chunk order."""
    embedding: Tensor
    """``z`` = global max pooling of the bottleneck, ``(N, embedding_dim)``, in batch order."""


class ConvBlock(nn.Module):
    """2 x (3x3 convolution without bias, norm, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm2 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, route: Route) -> Tensor:
        x = self.relu(self.norm1(self.conv1(x), route))
        return self.relu(self.norm2(self.conv2(x), route))


class AttentionGate(nn.Module):
    """Additive attention gate: weighs the skip ``x`` by coefficients computed from gate ``g``."""

    def __init__(
        self, gate_channels: int, skip_channels: int, inter_channels: int, norm: NormFactory
    ) -> None:
        super().__init__()
        self.w_g = nn.Conv2d(gate_channels, inter_channels, kernel_size=1, bias=False)
        self.norm_g = norm(inter_channels)
        self.w_x = nn.Conv2d(skip_channels, inter_channels, kernel_size=1, bias=False)
        self.norm_x = norm(inter_channels)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1, bias=False)
        self.norm_psi = norm(1)

    def forward(self, g: Tensor, x: Tensor, route: Route) -> Tensor:
        a = torch.relu(self.norm_g(self.w_g(g), route) + self.norm_x(self.w_x(x), route))
        alpha = torch.sigmoid(self.norm_psi(self.psi(a), route))
        return x * alpha


class UpBlock(nn.Module):
    """2x2 transposed convolution (stride 2), optional attention gate, concatenation, conv block."""

    def __init__(
        self, in_channels: int, out_channels: int, *, attention: bool, norm: NormFactory
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.gate = (
            AttentionGate(out_channels, out_channels, max(out_channels // 2, 1), norm)
            if attention
            else None
        )
        self.block = ConvBlock(2 * out_channels, out_channels, norm)

    def forward(self, x: Tensor, skip: Tensor, route: Route) -> Tensor:
        up = self.up(x)
        if self.gate is not None:
            skip = self.gate(up, skip, route)
        return self.block(torch.cat([skip, up], dim=1), route)


class MultiDomainUNet(nn.Module):
    """One 2D UNet for several domains: shared convolutions, per-domain norms and heads.

    Args:
        num_classes: per domain, the number of output classes including background. For the
            ``joint`` scheme pass one entry: the size of the union of labels plus background.
        in_channels: image channels (1 for MR).
        base_width: channels of the first level; level ``i`` has ``base_width * 2**i``.
        depth: number of resolution levels (5 gives 32-64-128-256-512); input height and width must
            be divisible by ``2**(depth - 1)``.
        attention: add attention gates on the skip connections (Att-UNet).
        norm: ``"dsbn"`` (one batch norm per domain) or ``"bn"`` (one shared batch norm).
    """

    def __init__(
        self,
        *,
        num_classes: Sequence[int],
        in_channels: int = 1,
        base_width: int = 32,
        depth: int = 5,
        attention: bool = False,
        norm: NormKind = "dsbn",
    ) -> None:
        super().__init__()
        classes = check_num_classes(num_classes)
        _check_positive("in_channels", in_channels, 1)
        _check_positive("base_width", base_width, 1)
        _check_positive("depth", depth, 2)
        if norm not in ("dsbn", "bn"):
            raise ConfigError(f"norm must be 'dsbn' or 'bn', got {norm!r}")
        self.in_channels = in_channels
        self.base_width = base_width
        self.depth = depth
        self.attention = attention
        self.norm = norm

        def norm_factory(channels: int) -> ChunkedNorm:
            return make_norm(norm, channels, len(classes))

        widths = [base_width * 2**i for i in range(depth)]
        self.widths: tuple[int, ...] = tuple(widths)
        self.encoders = nn.ModuleList(
            ConvBlock(c_in, c_out, norm_factory)
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.decoders = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], attention=attention, norm=norm_factory)
            for i in reversed(range(depth - 1))
        )
        self.heads = DomainHeads(widths[0], classes)

    # ------------------------------------------------------------------ properties
    @property
    def num_domains(self) -> int:
        return self.heads.num_domains

    @property
    def num_classes(self) -> tuple[int, ...]:
        return self.heads.num_classes

    @property
    def embedding_dim(self) -> int:
        return self.widths[-1]

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (``2**(depth - 1)``)."""
        return 2 ** (self.depth - 1)

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: Tensor, chunks: Chunks) -> SegOutput:
        """Segment a batch ordered as consecutive per-domain chunks ``[(domain, count), ...]``."""
        self._check_input(x)
        if not torch.jit.is_tracing():
            check_chunks(chunks, batch_size=x.shape[0], num_domains=self.num_domains)
        skips, bottleneck = self._encode(x, chunks)
        embedding = torch.amax(bottleneck, dim=(2, 3))
        features = self._decode(bottleneck, skips, chunks)
        return SegOutput(self.heads(features, chunks), embedding)

    def forward_domain(self, x: Tensor, domain: int) -> Tensor:
        """Logits ``(N, C_domain, H, W)`` of a batch of one domain (inference and ONNX export)."""
        self._check_input(x)
        self._check_domain(domain)
        skips, bottleneck = self._encode(x, domain)
        return self.heads.forward_domain(self._decode(bottleneck, skips, domain), domain)

    def forward_domain_embed(self, x: Tensor, domain: int) -> tuple[Tensor, Tensor]:
        """:meth:`forward_domain`'s logits and the embedding ``z`` of the same encoder pass
        (inference: the domain check without a second network call)."""
        self._check_input(x)
        self._check_domain(domain)
        skips, bottleneck = self._encode(x, domain)
        logits = self.heads.forward_domain(self._decode(bottleneck, skips, domain), domain)
        return logits, torch.amax(bottleneck, dim=(2, 3))

    def encode(self, x: Tensor, chunks: Route) -> tuple[list[Tensor], Tensor]:
        """Encoder only: the skip features (finest first) and the bottleneck feature map."""
        self._check_input(x)
        if isinstance(chunks, int):
            self._check_domain(chunks)
        else:
            check_chunks(chunks, batch_size=x.shape[0], num_domains=self.num_domains)
        return self._encode(x, chunks)

    def embed(self, x: Tensor, chunks: Route) -> Tensor:
        """The embedding ``z`` only (``(N, embedding_dim)``), skipping the decoder."""
        return torch.amax(self.encode(x, chunks)[1], dim=(2, 3))

    def _encode(self, x: Tensor, route: Route) -> tuple[list[Tensor], Tensor]:
        skips: list[Tensor] = []
        for level, block in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = block(x, route)
            skips.append(x)
        return skips[:-1], skips[-1]

    def _decode(self, x: Tensor, skips: list[Tensor], route: Route) -> Tensor:
        for decoder, skip in zip(self.decoders, reversed(skips), strict=True):
            x = decoder(x, skip, route)
        return x

    # ------------------------------------------------------------------ domains
    def add_domain(self, num_classes: int, *, init: InitKind = "mean") -> int:
        """Append a domain (a norm set in every DSBN layer and a head); return its index.

        The new norm sets start from the mean of the existing domains' parameters and running
        statistics (``init="mean"``) or from PyTorch's defaults (``init="default"``); the head is
        freshly initialised. With ``norm="bn"`` only a head is added.
        """
        if init not in ("mean", "default"):
            raise ConfigError(f"init must be 'mean' or 'default', got {init!r}")
        check_num_classes([num_classes])
        for module in self.modules():
            if isinstance(module, ChunkedNorm):
                module.add_domain(init=init)
        return self.heads.add_head(num_classes)

    def domain_view(self, domain: int) -> DomainView:
        """A module whose ``forward(x)`` is ``forward_domain(x, domain)`` (export, compile)."""
        self._check_domain(domain)
        return DomainView(self, domain)

    # ------------------------------------------------------------------ checks
    def _check_domain(self, domain: int) -> None:
        if isinstance(domain, bool) or not isinstance(domain, int):
            raise ModelError(f"domain must be an integer index, got {domain!r}")
        if not 0 <= domain < self.num_domains:
            raise ModelError(
                f"domain index must be in [0, {self.num_domains}), got {domain}; "
                f"the model has {self.num_domains} domain(s)"
            )

    def _check_input(self, x: Tensor) -> None:
        if torch.jit.is_tracing():  # shapes are symbolic while exporting; checked at run time
            return
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"input must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        height, width = int(x.shape[2]), int(x.shape[3])
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise ConfigError(
                f"input height and width must be divisible by 2**(depth-1) = {multiple} "
                f"(depth {self.depth}), got {height}x{width}; resize or pad the slices"
            )


class DomainView(nn.Module):
    """``forward(x) = model.forward_domain(x, domain)``: one domain's segmenter as a module."""

    def __init__(self, model: MultiDomainUNet, domain: int) -> None:
        super().__init__()
        self.model = model
        self.domain = domain
        self.train(model.training)  # a fresh module is in training mode; follow the model's mode

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_domain(x, self.domain)


def _check_positive(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
