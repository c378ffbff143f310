"""Test-time augmentation: average the network's probabilities over views it was trained on.

* **Flip**: a slice and its mirror, the one the domain's training augmentation uses (descriptor
  ``augment: {flip: ...}``: the in-plane ``width`` or ``height`` axis of the network's input), so
  the network has seen both views; a domain trained without flips (``none``) gets no test-time
  flip. The mirrored half's probabilities are mirrored back before the mean. One extra pass.
* **Shifts along a label chain** (:class:`ShiftTTA`): for a domain whose training labels form a
  chain (lumbar vertebrae; :mod:`pedseg.inference.chain`) along an in-plane axis, the slice is
  also shifted by half and one chain gap either way along it (the training augmentation
  translates by up to a quarter of the image, filling with the slice's minimum as here). A 2D
  network counts vertebrae from what its field of view shows, and a count that goes wrong for one
  view (the sacrum's S1 called L5) is outvoted by the others. Each view's probabilities are
  shifted back; rows a view moved out of the image are averaged over the views that saw them.
  Four extra passes.

``pedseg predict --tta`` applies every augmentation the domain has; the output keeps the input's
layout.
"""

from __future__ import annotations

import numpy as np

from pedseg.errors import ConfigError
from pedseg.inference.backends import Backend, embedding_call

__all__ = ["CHAIN_SHIFT_GAPS", "FLIP_DIMS", "FlipTTA", "ShiftTTA", "chain_shifts", "with_tta"]

#: The chain TTA's shifts, in chain gaps (the distance between consecutive members' centroids).
CHAIN_SHIFT_GAPS = (-1.0, -0.5, 0.5, 1.0)

#: Descriptor flip axis -> array dimension of a ``(N, C, H, W)`` batch.
FLIP_DIMS = {"height": 2, "width": 3}


class _Averaged:
    """What every TTA wrapper shares: it is a :class:`~pedseg.inference.backends.Backend` whose
    output is :meth:`_mean` of the plain pass and the other views (the embedding, where asked
    for, is the plain pass's: what the domain profiles were measured on)."""

    def __init__(self, backend: Backend) -> None:
        self.inner = backend

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
        """The mean probabilities and the embedding of the plain pass."""
        call = embedding_call(self.inner)
        if call is None:
            raise ConfigError("the wrapped backend gives no embedding")
        plain, embedding = call(images)
        return self._mean(plain, images), embedding

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._mean(self.inner(images), images)

    def _mean(self, plain: np.ndarray, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FlipTTA(_Averaged):
    """A :class:`~pedseg.inference.backends.Backend` that averages ``backend`` over a flip."""

    def __init__(self, backend: Backend, *, axis: str) -> None:
        if axis not in FLIP_DIMS:
            raise ConfigError(f"the TTA flip axis must be one of height, width, got {axis!r}")
        super().__init__(backend)
        self.axis = axis
        self._dim = FLIP_DIMS[axis]

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


class ShiftTTA(_Averaged):
    """A :class:`~pedseg.inference.backends.Backend` that averages ``backend`` over its input and
    copies shifted by ``shifts`` pixels along array dimension ``dim`` (2: height, 3: width) of a
    ``(N, C, H, W)`` batch, filled with each slice's minimum (see the module docstring)."""

    def __init__(self, backend: Backend, *, dim: int, shifts: tuple[int, ...]) -> None:
        if dim not in (2, 3):
            raise ConfigError(f"the TTA shift dimension must be 2 or 3, got {dim!r}")
        super().__init__(backend)
        self.dim = dim
        self.shifts = tuple(int(s) for s in shifts if int(s) != 0)

    def _mean(self, plain: np.ndarray, images: np.ndarray) -> np.ndarray:
        total = plain.astype(np.float32, copy=True)
        length = images.shape[self.dim]
        seen = np.ones(length, dtype=np.float32)
        floor = images.min(axis=(1, 2, 3), keepdims=True)
        for shift in self.shifts:
            if abs(shift) >= length:
                continue
            moved = np.broadcast_to(floor, images.shape).copy()
            target, source = _windows(images.ndim, self.dim, shift, length)
            moved[target] = images[source]  # input row r is at r + shift
            total[source] += self.inner(moved)[target]  # and its output row with it
            seen[source[self.dim]] += 1.0
        shape = [1, 1, 1, 1]
        shape[self.dim] = length
        total /= seen.reshape(shape)
        return total


def _windows(
    ndim: int, dim: int, shift: int, length: int
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples of the rows a shift by ``shift`` along ``dim`` writes to and reads from:
    ``moved[target] = images[source]`` puts row ``r`` at ``r + shift``."""
    target = [slice(None)] * ndim
    source = [slice(None)] * ndim
    target[dim] = slice(max(0, shift), length + min(0, shift))
    source[dim] = slice(max(0, -shift), length - max(0, shift))
    return tuple(target), tuple(source)


def chain_shifts(gap_px: float) -> tuple[int, ...]:
    """The chain TTA's shifts in pixels for a chain gap of ``gap_px`` pixels (0 when too small)."""
    return tuple(sorted({round(g * gap_px) for g in CHAIN_SHIFT_GAPS} - {0}))
