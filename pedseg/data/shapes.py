"""Shape primitives, random fields and the anatomies of the phantom domains (:mod:`pedseg.data.synth`).

Shapes are approximate signed distance fields (SDF) evaluated on a coordinate grid ``q`` of shape
``(3, X, Y, Z)``: negative inside, positive outside, in the grid's (isotropic) units. They are combined
with :func:`smooth_union` so that bones made of several parts have no creases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

Point = Sequence[float] | np.ndarray  # a 3-vector


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix ``Rz @ Ry @ Rx`` for angles in radians about the x, y and z axes."""
    cx, sx = math.cos(rx), math.sin(rx)
    cy, sy = math.cos(ry), math.sin(ry)
    cz, sz = math.cos(rz), math.sin(rz)
    mx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    my = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    mz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return mz @ my @ mx


def axis_angle(axis: Point, angle: float) -> np.ndarray:
    """Rotation matrix of ``angle`` radians about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(angle) * k + (1.0 - math.cos(angle)) * (k @ k)


def frame(u: Point, w: Point) -> np.ndarray:
    """Orthonormal frame (columns) whose first axis is ``u`` and third is ``w`` made orthogonal to it."""
    a = np.asarray(u, dtype=np.float64)
    a = a / np.linalg.norm(a)
    c = np.asarray(w, dtype=np.float64)
    c = c - a * float(a @ c)
    c = c / np.linalg.norm(c)
    b = np.cross(c, a)
    return np.stack([a, b, c], axis=1)


FAR = 0.3  # SDF values are clamped here: only the neighbourhood of a surface matters


class Grid:
    """Anatomical coordinates ``q`` (``(3, X, Y, Z)``) of the voxels of a canonical volume.

    ``q = (R^T (p - shift)) / scale`` for the normalised voxel position ``p`` (voxel offset from the
    centre times spacing / ``half`` mm), so a box in anatomical units maps to a small voxel block:
    primitives evaluate only there and fill the rest with :data:`FAR`.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        *,
        rot: np.ndarray,
        shift: np.ndarray,
        scale: float,
    ) -> None:
        self.shape = shape
        self.half = min(n * s for n, s in zip(shape, spacing, strict=True)) / 2.0
        self._step = np.asarray(spacing, dtype=np.float64) / self.half
        self._centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
        self._rot = np.asarray(rot, dtype=np.float64)
        self._shift = np.asarray(shift, dtype=np.float64)
        self._scale = float(scale)
        axes = [
            ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * st)
            for n, st in zip(shape, self._step, strict=True)
        ]
        self.axes = axes  # normalised voxel positions along each axis, not posed
        p = np.stack(np.meshgrid(*axes, indexing="ij"))
        self.q = to_local(p, self._shift, self._rot) / np.float32(self._scale)

    def thin(self, radius: float) -> float:
        """``radius`` made at least ~0.6 voxel along the coarsest axis, so thin parts stay connected."""
        return max(radius, 0.6 * float(self._step.max()) / self._scale)

    def block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
        """Voxel slices covering the anatomical box ``[lo, hi]`` grown by :data:`FAR`."""
        lo = np.asarray(lo, dtype=np.float64) - FAR
        hi = np.asarray(hi, dtype=np.float64) + FAR
        corners = np.array([[(hi if b else lo)[i] for i, b in enumerate(bits)] for bits in _BITS])
        pos = (self._scale * corners) @ self._rot.T + self._shift
        idx = pos / self._step + self._centre
        first = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, self.shape)
        last = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 0, self.shape)
        return (
            slice(int(first[0]), int(last[0])),
            slice(int(first[1]), int(last[1])),
            slice(int(first[2]), int(last[2])),
        )

    def evaluate(
        self, lo: np.ndarray, hi: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        """Evaluate the SDF ``fn(q_block)`` in the block of box ``[lo, hi]``; FAR elsewhere."""
        out = np.full(self.shape, FAR, dtype=np.float32)
        sl = self.block(lo, hi)
        if all(s.stop > s.start for s in sl):
            out[sl] = np.minimum(fn(self.q[(slice(None), *sl)]), FAR)
        return out


_BITS = [(i & 1, i & 2, i & 4) for i in range(8)]


def to_local(q: np.ndarray, center: Point, basis: np.ndarray | None = None) -> np.ndarray:
    """Coordinates of ``q`` in the frame at ``center`` with axes the columns of ``basis``."""
    p = q - np.asarray(center, dtype=np.float32).reshape(3, 1, 1, 1)
    if basis is None:
        return p
    return _dot3(np.asarray(basis, dtype=np.float32).T, p)


def _dot3(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``m @ p`` over the leading axis of ``p`` (``(k, 3) x (3, ...) -> (k, ...)``), as float32.

    Written out rather than with BLAS: for an inner dimension of 3 the threaded BLAS call is slower.
    """
    m32 = np.asarray(m, dtype=np.float32)
    rows = m32.reshape(-1, 3)
    out = np.empty((rows.shape[0], *p.shape[1:]), dtype=np.float32)
    for k, row in enumerate(rows):
        acc = out[k]
        np.multiply(p[0], row[0], out=acc)
        acc += p[1] * row[1]
        acc += p[2] * row[2]
    return out.reshape(m32.shape[:-1] + p.shape[1:])


def _box(center: Point, radii: Point, basis: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(radii, dtype=np.float64)
    if basis is not None:
        r = np.abs(np.asarray(basis, dtype=np.float64)) @ r
    c = np.asarray(center, dtype=np.float64)
    return c - r, c + r


def ellipsoid(
    grid: Grid, center: Point, radii: Point, basis: np.ndarray | None = None
) -> np.ndarray:
    """Approximate SDF of an ellipsoid (exact on the surface, good near it)."""
    r = np.asarray(radii, dtype=np.float32).reshape(3, 1, 1, 1)

    def fn(q: np.ndarray) -> np.ndarray:
        p = to_local(q, center, basis)
        k0 = np.sqrt(np.sum((p / r) ** 2, axis=0))
        k1 = np.sqrt(np.sum((p / (r * r)) ** 2, axis=0))
        return np.asarray(k0 * (k0 - 1.0) / np.maximum(k1, 1e-6), dtype=np.float32)

    return grid.evaluate(*_box(center, radii, basis), fn)


def superellipsoid(
    grid: Grid,
    center: Point,
    radii: Point,
    exponent: float,
    basis: np.ndarray | None = None,
) -> np.ndarray:
    """Approximate SDF of a superellipsoid ``sum |x_i / r_i|^e = 1`` (box-like for large ``e``)."""
    r = np.asarray(radii, dtype=np.float32).reshape(3, 1, 1, 1)

    def fn(q: np.ndarray) -> np.ndarray:
        p = to_local(q, center, basis)
        norm = np.sum(np.abs(p / r) ** np.float32(exponent), axis=0) ** np.float32(1.0 / exponent)
        return np.asarray((norm - 1.0) * float(min(radii)), dtype=np.float32)

    return grid.evaluate(*_box(center, radii, basis), fn)


def rounded_box(
    grid: Grid,
    center: Point,
    half: Point,
    rounding: float,
    basis: np.ndarray | None = None,
) -> np.ndarray:
    """Exact SDF of a box of half-sizes ``half`` whose edges are rounded with radius ``rounding``."""
    inner = (np.asarray(half, dtype=np.float32) - np.float32(rounding)).reshape(3, 1, 1, 1)

    def fn(q: np.ndarray) -> np.ndarray:
        d = np.abs(to_local(q, center, basis)) - inner
        outside = np.sqrt(np.sum(np.maximum(d, 0.0) ** 2, axis=0))
        return np.asarray(outside + np.minimum(d.max(axis=0), 0.0) - rounding, dtype=np.float32)

    return grid.evaluate(*_box(center, half, basis), fn)


def capsule(grid: Grid, a: Point, b: Point, radius: float) -> np.ndarray:
    """Exact SDF of a capsule: segment ``a``-``b`` thickened by ``radius``."""
    return tapered_capsule(grid, a, b, radius, radius)


def tapered_capsule(grid: Grid, a: Point, b: Point, radius_a: float, radius_b: float) -> np.ndarray:
    """Approximate SDF of a cone-like capsule whose radius goes linearly from ``a`` to ``b``."""
    av, bv = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rmax = max(radius_a, radius_b)
    ba = (bv - av).astype(np.float32)
    denom = float(ba @ ba)

    def fn(q: np.ndarray) -> np.ndarray:
        pa = to_local(q, a)
        h = np.clip(_dot3(ba, pa) / denom, 0.0, 1.0)
        d = pa - ba.reshape(3, 1, 1, 1) * h
        radius = radius_a + (radius_b - radius_a) * h
        return np.asarray(np.sqrt(np.sum(d * d, axis=0)) - radius, dtype=np.float32)

    return grid.evaluate(np.minimum(av, bv) - rmax, np.maximum(av, bv) + rmax, fn)


def slab(grid: Grid, point: Point, normal: Point, half: float) -> np.ndarray:
    """SDF of the infinite slab of half-thickness ``half`` through ``point`` with ``normal``."""
    n = np.asarray(normal, dtype=np.float32)
    n = n / np.linalg.norm(n)
    dist = _dot3(n, to_local(grid.q, point))
    return np.asarray(np.abs(dist) - half, dtype=np.float32)


def smooth_union(d1: np.ndarray, d2: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum of two SDFs; ``k`` is the blending width."""
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k, 0.0, 1.0)
    return np.asarray(d2 + (d1 - d2) * h - k * h * (1.0 - h), dtype=np.float32)


def union_all(parts: Sequence[np.ndarray], k: float) -> np.ndarray:
    """Smooth union of several SDFs."""
    out = parts[0]
    for part in parts[1:]:
        out = smooth_union(out, part, k)
    return out


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1``."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t), dtype=np.float32)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int, int], cell: Sequence[float]
) -> np.ndarray:
    """Smooth random field (zero mean, unit std): coarse noise, one sample per ``cell`` voxels along
    each axis, blurred and linearly interpolated to ``shape`` separably (cheap for large volumes)."""
    coarse = tuple(max(2, math.ceil(n / max(c, 1.0)) + 1) for n, c in zip(shape, cell, strict=True))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.7)
    (n0, n1, n2), (c0, c1, c2) = shape, coarse
    field = (_interp_matrix(n0, c0) @ field.reshape(c0, -1)).reshape(n0, c1, c2)
    field = _interp_matrix(n1, c1) @ field
    field = field @ _interp_matrix(n2, c2).T
    std = float(field.std())
    return np.asarray((field - field.mean()) / (std if std > 0 else 1.0), dtype=np.float32)


def _interp_matrix(n: int, c: int) -> np.ndarray:
    """``(n, c)`` matrix of linear interpolation from ``c`` coarse samples spanning ``n`` points."""
    x = np.linspace(0.0, c - 1.0, n)
    lo = np.minimum(np.floor(x).astype(int), c - 2)
    w = (x - lo).astype(np.float32)
    m = np.zeros((n, c), dtype=np.float32)
    m[np.arange(n), lo] = 1.0 - w
    m[np.arange(n), lo + 1] = w
    return m


# --- phantom anatomies (coordinates: x right/lateral, y anterior, z superior; grid units) ---


def uniform(rng: np.random.Generator, lo: float = 0.9, hi: float = 1.1) -> float:
    """One uniform draw as a float (per-case size and intensity jitter)."""
    return float(rng.uniform(lo, hi))


@dataclass
class Anatomy:
    """Signed distance fields (negative inside) of one case, in anatomical grid units."""

    bones: list[tuple[int, np.ndarray]]  # (label, sdf); label 0 = bone left unlabelled
    body: np.ndarray
    fat: list[np.ndarray] = field(default_factory=list)
    dark: list[np.ndarray] = field(default_factory=list)  # tendons, lung
    cartilage: list[np.ndarray] = field(default_factory=list)  # articular cartilage, outside bone
    physes: dict[int, np.ndarray] = field(default_factory=dict)  # bone index -> growth plate sdf


def ankle(q: Grid, rng: np.random.Generator) -> Anatomy:
    """Right ankle: tibia over the talar dome, calcaneus below and behind; fibula, navicular, cuboid.

    Proportions follow a child's ankle: the talus is a dome-topped body with an anteromedial neck and
    head (towards the navicular) sitting in the mortise of the malleoli; the calcaneus is the larger,
    longer bone below it, whose tuberosity rises behind the talus (Achilles insertion, apophysis) and
    whose anterior process meets the cuboid; fat fills the sinus tarsi between the two.
    """
    t, a, c = uniform(rng), uniform(rng), uniform(rng)  # tibia, talus, calcaneus size factors
    lean = uniform(rng, -0.06, 0.06)
    tibia = union_all(
        [
            capsule(q, (lean, -0.05, 1.8), (0.0, -0.05, 0.3), 0.27 * t),
            rounded_box(q, (0.0, -0.02, 0.13), (0.40 * t, 0.34 * t, 0.15), 0.12),
            capsule(q, (-0.40, 0.0, 0.16), (-0.46, 0.0, -0.2), q.thin(0.085)),  # medial malleolus
        ],
        0.1,
    )
    fibula = smooth_union(
        capsule(q, (0.58 + lean, -0.22, 1.8), (0.56, -0.18, -0.05), 0.1),
        ellipsoid(q, (0.55, -0.16, -0.2), (0.12, 0.15, 0.22)),  # lateral malleolus
        0.08,
    )
    talus = union_all(
        [
            ellipsoid(q, (0.0, -0.04, -0.27), (0.31 * a, 0.34 * a, 0.23)),  # body, dome on top
            tapered_capsule(q, (-0.04, 0.14, -0.31), (-0.1, 0.36 * a, -0.36), 0.14, 0.16),
        ],
        0.1,
    )
    navicular = ellipsoid(q, (-0.12, 0.36 * a + 0.29, -0.39), (0.26, 0.1, 0.16))
    heel = -0.26 - 0.44 * c  # centre of the tuberosity along y
    calcaneus = union_all(
        [
            rounded_box(q, (0.07, -0.2, -0.74), (0.26 * c, 0.5 * c, 0.23), 0.16),
            ellipsoid(q, (0.07, heel, -0.62), (0.22, 0.21, 0.3)),  # tuberosity
            capsule(q, (-0.14, -0.04, -0.57), (-0.32, 0.05, -0.53), q.thin(0.08)),  # sustentaculum
            capsule(q, (0.14, 0.05, -0.77), (0.2, 0.34 + 0.2 * c, -0.75), 0.13),  # anterior process
        ],
        0.1,
    )
    cuboid = ellipsoid(q, (0.22, 0.61 + 0.2 * c, -0.77), (0.2, 0.12, 0.17))
    # Articular cartilage covers most of the talus (dome, malleolar facets, subtalar facets, head),
    # all but its neck: a shell just outside the bone, which the bones drawn later do not cover.
    neck = slab(q, (0.0, 0.2 * a, 0.0), (0.0, 1.0, 0.0), 0.07)
    cartilage = [np.maximum(np.maximum(talus - 0.065, -talus), -neck)]
    body = smooth_union(
        capsule(q, (0.1, -0.15, 2.2), (0.1, -0.15, -0.55), 0.76 * uniform(rng, 0.95, 1.05)),
        rounded_box(q, (0.05, 0.2, -0.74), (0.62, 1.25, 0.42), 0.36),
        0.25,
    )
    fat = [
        ellipsoid(q, (0.05, -0.54, -0.1), (0.2, 0.15, 0.35)),  # Kager's fat pad
        ellipsoid(q, (0.04, -0.3, -1.02), (0.5, 0.62, 0.14)),  # heel pad
        ellipsoid(q, (0.2, 0.12, -0.5), (0.18, 0.13, 0.07)),  # sinus tarsi
    ]
    dark = [
        tapered_capsule(q, (0.06, -0.76, 1.8), (0.06, heel - 0.2, -0.58), 0.06, 0.085),  # Achilles
        capsule(q, (-0.52, -0.22, 1.8), (-0.5, -0.1, -0.45), 0.045),  # tibialis posterior
        capsule(q, (-0.1, 0.42, 1.8), (-0.1, 0.75, -0.35), 0.04),  # extensors
        capsule(q, (0.68, -0.38, 1.8), (0.66, -0.3, -0.5), 0.045),  # peronei
    ]
    tib_physis = slab(q, (0.0, 0.0, 0.34 + uniform(rng, -0.04, 0.04)), (0.0, 0.12, 1.0), 0.024)
    apophysis = slab(q, (0.0, heel + 0.06, -0.62), (0.0, 1.0, 0.25), 0.026)
    bones = [(1, calcaneus), (2, talus), (3, tibia), (0, fibula), (0, navicular), (0, cuboid)]
    physes = {0: apophysis, 2: tib_physis}
    return Anatomy(bones, body, fat, dark, cartilage=cartilage, physes=physes)


def shoulder(q: Grid, rng: np.random.Generator) -> Anatomy:
    """Right shoulder: humeral head + shaft, scapula (glenoid, blade, spine, acromion, coracoid)."""
    h, s = uniform(rng), uniform(rng)  # humerus, scapula size factors
    head_c = (0.33, 0.0, 0.22)
    humerus = union_all(
        [
            ellipsoid(q, head_c, (0.36 * h, 0.36 * h, 0.36 * h)),
            ellipsoid(q, (0.32 + 0.33 * h, 0.1, 0.2), (0.12, 0.16, 0.2)),  # greater tubercle
            tapered_capsule(q, (0.43, 0.02, 0.05), (0.48, 0.04, -1.8), 0.24 * h, 0.18 * h),
        ],
        0.12,
    )
    blade_dir = np.array([-1.0, -0.7 * s, 0.0]) / math.hypot(1.0, 0.7 * s)
    blade_c = np.array([-0.42, -0.12, -0.05]) + 0.34 * blade_dir
    scapula = union_all(
        [
            ellipsoid(q, (-0.17 - 0.33 * (h - 1), 0.0, 0.2), (0.08, 0.17, 0.26)),
            capsule(q, (-0.22, 0.0, 0.2), (-0.42, -0.12, 0.14), 0.11),  # neck
            superellipsoid(
                q, blade_c, (0.36, q.thin(0.05), 0.62 * s), 2.5, frame(blade_dir, (0.0, 0.0, 1.0))
            ),
            capsule(q, (-0.85, -0.5, 0.35), (-0.25, -0.3, 0.62), q.thin(0.07)),  # spine
            capsule(q, (-0.25, -0.3, 0.62), (0.45, -0.05, 0.78), q.thin(0.065)),  # acromion
            capsule(q, (-0.2, 0.05, 0.36), (0.05, 0.48, 0.35), q.thin(0.07)),  # coracoid
        ],
        0.08,
    )
    clavicle = capsule(q, (-1.4, 0.3, 0.95), (0.2, 0.07, 0.92), 0.09)
    body = smooth_union(
        rounded_box(q, (-0.35, -0.02, -0.2), (1.15, 0.95 * uniform(rng), 2.0), 0.6),
        capsule(q, (0.45, 0.03, 0.2), (0.5, 0.05, -2.2), 0.45),
        0.3,
    )
    dark = [
        ellipsoid(q, (-1.25, 0.2, -0.3), (0.4, 0.6, 1.0)),  # lung
        capsule(q, (0.47, 0.3, 0.35), (0.52, 0.3, -1.8), 0.04),  # biceps long head
        ellipsoid(q, (0.35, -0.05, 0.64), (0.3, 0.15, 0.035)),  # supraspinatus tendon
    ]
    fat = [ellipsoid(q, (0.0, 0.25, 0.15), (0.12, 0.12, 0.3))]  # fat near the rotator interval
    physis = slab(q, (0.36, 0.0, 0.06 + uniform(rng, -0.03, 0.03)), (-0.3, 0.0, 1.0), 0.024)
    bones = [(1, humerus), (2, scapula), (0, clavicle)]
    return Anatomy(bones, body, fat, dark, physes={0: physis})


ANATOMIES: dict[str, Callable[[Grid, np.random.Generator], Anatomy]] = {
    "ankle": ankle,
    "shoulder": shoulder,
}
