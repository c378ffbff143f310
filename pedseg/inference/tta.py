"""Flip test-time augmentation: average the network's probabilities over a slice and its mirror.

The mirror is the one the domain's training augmentation uses (descriptor ``augment: {flip: ...}``:
the in-plane ``width`` or ``height`` axis of the network's input), so the network has seen both
views; a domain trained without flips (``none``) gets no test-time flip either. The mirrored
half's probabilities are mirrored back before the mean, so the output keeps the input's layout.
The cost is one extra network pass per slice (``pedseg predict --tta``).
"""

from __future__ import annotations

import numpy as np

from pedseg.errors import ConfigError
from pedseg.inference.backends import Backend, embedding_call

__all__ = ["FLIP_DIMS", "FlipTTA", "with_tta"]

#: Descriptor flip axis -> array dimension of a ``(N, C, H, W)`` batch.
FLIP_DIMS = {"height": 2, "width": 3}


class FlipTTA:
    """A :class:`~pedseg.inference.backends.Backend` that averages ``backend`` over a flip."""

    def __init__(self, backend: Backend, *, axis: str) -> None:
        if axis not in FLIP_DIMS:
            raise ConfigError(f"the TTA flip axis must be one of height, width, got {axis!r}")
        self.inner = backend
        self.axis = axis
        self._dim = FLIP_DIMS[axis]

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def device(self) -> str:
        return self.inner.device

    @property
    def embeds(self) -> bool:
        return embedding_call(self.inner) is not None

    def segment_and_embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean probabilities and the embedding of the unflipped pass (what the domain profiles
        were measured on)."""
        call = embedding_call(self.inner)
        if call is None:
            raise ConfigError("the wrapped backend gives no embedding")
        plain, embedding = call(images)
        return self._mean(plain, images), embedding

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._mean(self.inner(images), images)

    def _mean(self, plain: np.ndarray, images: np.ndarray) -> np.ndarray:
        mirrored = self.inner(np.ascontiguousarray(np.flip(images, axis=self._dim)))
        mean = plain.astype(np.float32, copy=True)
        mean += np.flip(mirrored, axis=self._dim)
        mean *= 0.5
        return mean


def with_tta(backend: Backend, flip: str) -> Backend:
    """``backend`` averaged over the ``flip`` mirror, or ``backend`` itself for ``none``."""
    if flip == "none":
        return backend
    return FlipTTA(backend, axis=flip)
