"""Phantom domains: deterministic synthetic MR datasets that look like the paper's ankle and shoulder data.

``synth_case`` renders one case from ``(domain, seed, index, config)`` alone: smooth bones (cortical rim
dark, fatty marrow bright, pediatric growth plates, articular cartilage where the anatomy has it, e.g.
around the talus) inside muscle and fat, tendons, a smooth
multiplicative bias field and Rician noise, on an anisotropic grid (0.4 x 0.4 x 1.2 mm by default).
The anatomy is built in the canonical (RAS+) voxel order, the thick axis being the slice axis; on disk
the axes are permuted and flipped per case and odd cases get a small oblique rotation in the affine, so
readers must reorient exactly. ``synth_dataset`` writes Medical Segmentation Decathlon (MSD) folders.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pedseg import __version__
from pedseg.data import shapes as sh
from pedseg.errors import ConfigError, OutputExistsError, UnknownNameError
from pedseg.io import write_volume
from pedseg.io.atomic import write_text_atomic

PHANTOM_DOMAINS = ("ankle", "shoulder")
#: Label ids and names, identical to the built-in descriptors ``domains/<name>.yaml``.
PHANTOM_LABELS: dict[str, tuple[tuple[int, str], ...]] = {
    "ankle": ((1, "calcaneus"), (2, "talus"), (3, "tibia")),
    "shoulder": ((1, "humerus"), (2, "scapula")),
}
_MAX_AXIS = 1024
_MAX_OBLIQUE = 30.0  # degrees; beyond 45 the closest canonical axes would become ambiguous


@dataclass(frozen=True)
class PhantomConfig:
    """How phantoms are rendered. ``shape`` is (in-plane, in-plane, slices); slices along ``spacing[2]``."""

    shape: tuple[int, int, int] = (128, 128, 48)
    spacing: tuple[float, float, float] = (0.4, 0.4, 1.2)
    noise: float = 0.03  # Rician noise std, relative to the fat signal
    bias: float = 0.25  # max |log| of the multiplicative bias field
    oblique_degrees: float = 8.0  # max oblique rotation of the affine of odd cases; 0 disables

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(_is_int(n) and 16 <= n <= _MAX_AXIS for n in shape):
            raise ConfigError(
                f"shape must be three integers >= 16 and <= {_MAX_AXIS}, got {self.shape}"
            )
        spacing = tuple(self.spacing)
        if len(spacing) != 3 or not all(_is_real(s) and 0 < s <= 100 for s in spacing):
            raise ConfigError(f"spacing must be three numbers in (0, 100] mm, got {self.spacing}")
        if spacing[2] < max(spacing[0], spacing[1]):
            raise ConfigError(
                "spacing[2] (slice thickness) must be the largest spacing so that the slice axis "
                f"is the thick one, got {self.spacing}"
            )
        for name, value, high in (
            ("noise", self.noise, 0.5),
            ("bias", self.bias, 1.0),
            ("oblique_degrees", self.oblique_degrees, _MAX_OBLIQUE),
        ):
            if not _is_real(value) or not 0 <= value <= high:
                raise ConfigError(f"{name} must be in [0, {high:g}], got {value}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return ok and math.isfinite(float(value))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Tissue:
    fat: float
    muscle: float
    marrow: float
    cortex: float
    cartilage: float
    tendon: float
    physis: float
    marbling: float  # threshold of the intramuscular fat field; lower = more fat
    septa: float  # width of the fascial fat septa (level band of a smooth field)
    fat_layer: float  # subcutaneous fat thickness, grid units
    gain: float  # int16 units per fat signal


def _tissue(domain: str, rng: np.random.Generator) -> _Tissue:
    if domain == "ankle":  # T1 3D gradient echo
        base = (1.0, 0.33, 0.82, 0.08, 0.52, 0.05, 0.42, 1.9, 0.05, 0.06, 1200.0)
    else:  # eTHRIVE: brighter muscle, darker marrow, more intramuscular fat
        base = (0.95, 0.42, 0.72, 0.1, 0.5, 0.06, 0.4, 1.4, 0.08, 0.1, 2600.0)
    jit = (
        [sh.uniform(rng) for _ in range(7)]
        + [sh.uniform(rng, 0.95, 1.05)]
        + [sh.uniform(rng, 0.8, 1.2)] * 2
    )
    jit.append(sh.uniform(rng, 0.8, 1.25))
    return _Tissue(*(b * j for b, j in zip(base, jit, strict=True)))


def _grid(config: PhantomConfig, rng: np.random.Generator) -> sh.Grid:
    """The canonical voxel grid with a random anatomical pose (scale, rotation, shift)."""
    scale = sh.uniform(rng, 0.86, 0.97)
    angles = np.radians(rng.uniform([-6, -6, -12], [6, 6, 12]))
    shift = rng.uniform(-0.05, 0.05, 3)
    rot = sh.rotation(*(float(v) for v in angles))
    return sh.Grid(config.shape, config.spacing, rot=rot, shift=shift, scale=scale)


def _render(domain: str, *, seed: int, index: int, config: PhantomConfig) -> tuple[np.ndarray, ...]:
    """Canonical (RAS+) image float32 (fat = 1), label uint8 and 4x4 affine of one case."""
    pose_rng, anat_rng, tex_rng, geo_rng = _streams(domain, seed, index)[:4]
    grid = _grid(config, pose_rng)
    anatomy = sh.ANATOMIES[domain](grid, anat_rng)
    tissue = _tissue(domain, anat_rng)
    shape, spacing = config.shape, config.spacing
    coarse, coarse2 = (sh.smooth_noise(tex_rng, shape, [4.0 / s for s in spacing]) for _ in "ab")
    marbling = sh.smooth_noise(
        tex_rng, shape, [2.0 / spacing[0], 2.0 / spacing[1], 6.0 / spacing[2]]
    )
    septa = sh.smooth_noise(tex_rng, shape, [6.0 / spacing[0], 6.0 / spacing[1], 20.0 / spacing[2]])
    fine = sh.smooth_noise(tex_rng, shape, [1.0 / s for s in spacing])
    # Soft tissue.
    image = np.zeros(shape, dtype=np.float32)
    inside = anatomy.body < 0
    image[inside] = tissue.muscle * (1.0 + 0.1 * coarse[inside])
    fat = inside & (anatomy.body > -tissue.fat_layer * (1.0 + 0.35 * coarse2))
    fat |= inside & ((marbling > tissue.marbling) | (np.abs(septa) < tissue.septa))
    for region in anatomy.fat:
        fat |= inside & (region < 0)
    image[fat] = tissue.fat * (1.0 + 0.03 * fine[fat])
    for region in anatomy.dark:
        image[inside & (region < 0)] = tissue.tendon
    for region in anatomy.cartilage:
        image[inside & (region < 0)] = tissue.cartilage
    # Bones: argmin over bones, joint spaces carved where two bones come close.
    owner, first, second = _two_nearest([sdf for _, sdf in anatomy.bones])
    gap = max(0.025, 0.6 * min(spacing) / grid.half)
    surface = np.maximum(first, gap - second)  # sdf of the bone after carving the joint
    bone = surface < 0
    joint = (second < gap) & (first < gap) & ~bone
    image[joint] = tissue.cartilage
    cortex = max(0.045, 1.5 * min(spacing) / grid.half)
    depth = -surface[bone]
    marrow = tissue.marrow * (1.0 + 0.08 * fine[bone] + 0.04 * coarse[bone])
    physis = np.zeros(int(bone.sum()), dtype=bool)
    for which, slab in anatomy.physes.items():
        physis |= (owner[bone] == which) & (slab[bone] < 0)
    marrow = np.where(physis, tissue.physis, marrow)
    rim = sh.smoothstep(0.7 * cortex, 1.3 * cortex, depth)
    image[bone] = tissue.cortex + (marrow - tissue.cortex) * rim
    ids = np.array([lab for lab, _ in anatomy.bones], dtype=np.uint8)
    label = np.where(bone, ids[owner], 0).astype(np.uint8)
    # Acquisition: point spread, bias field, Rician noise, scanner scaling.
    image = ndimage.gaussian_filter(image, (0.7, 0.7, 0.45))
    image *= _bias(grid.axes, tex_rng, config.bias, lateral=domain == "shoulder")
    sigma = config.noise * tissue.fat
    n1, n2 = (tex_rng.standard_normal(shape, dtype=np.float32) * sigma for _ in range(2))
    image = np.sqrt((image + n1) ** 2 + n2**2) * tissue.gain
    return image.astype(np.float32), label, _canonical_affine(config, index, geo_rng)


def _two_nearest(sdfs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the nearest (smallest) SDF and the two smallest values, voxel-wise."""
    owner = np.zeros(sdfs[0].shape, dtype=np.intp)
    first = sdfs[0].copy()
    second = np.full_like(first, sh.FAR)
    for i, sdf in enumerate(sdfs[1:], start=1):
        closer = sdf < first
        second = np.where(closer, first, np.minimum(second, sdf))
        owner[closer] = i
        first = np.where(closer, sdf, first)
    return owner, first, second


def _streams(domain: str, seed: int, index: int) -> list[np.random.Generator]:
    """Independent random streams of one case: pose, anatomy, texture, geometry, disk order."""
    root = np.random.SeedSequence([zlib.crc32(domain.encode("utf-8")), seed, index])
    return [np.random.default_rng(child) for child in root.spawn(5)]


def _bias(
    axes: Sequence[np.ndarray], rng: np.random.Generator, amount: float, *, lateral: bool
) -> np.ndarray:
    """Smooth multiplicative field: exp of a separable quadratic, max |log| = ``amount`` or less."""
    shape = (len(axes[0]), len(axes[1]), len(axes[2]))
    if amount == 0:
        return np.ones(shape, dtype=np.float32)
    lin = rng.uniform(-1.0, 1.0, 3)
    quad = rng.uniform(-0.6, 0.6, 3)
    if lateral:  # surface coil on the lateral side of the shoulder
        lin[0] = 1.5
    t0, t1, t2 = (np.float32(lin[i]) * x + np.float32(quad[i]) * x * x for i, x in enumerate(axes))
    log_b = t0[:, None, None] + t1[None, :, None] + t2[None, None, :]
    log_b *= amount * sh.uniform(rng, 0.6, 1.0) / max(float(np.abs(log_b).max()), 1e-6)
    return np.exp(log_b).astype(np.float32)


def _canonical_affine(config: PhantomConfig, index: int, rng: np.random.Generator) -> np.ndarray:
    """RAS affine of the canonical grid: odd cases are oblique by up to ``oblique_degrees``."""
    rot = np.eye(3)
    axis = rng.standard_normal(3)
    fraction = sh.uniform(rng, 0.5, 1.0)
    if index % 2 == 1 and config.oblique_degrees > 0:
        rot = sh.axis_angle(axis, math.radians(config.oblique_degrees) * fraction)
    center = rng.uniform(-30.0, 30.0, 3)
    linear = rot @ np.diag(config.spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = center - linear @ ((np.array(config.shape) - 1) / 2.0)
    return affine


def _to_disk(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute and flip the canonical axes into a random on-disk order, adjusting the affine."""
    perm = rng.permutation(3)
    flips = rng.random(3) < 0.5
    disk_shape = [image.shape[p] for p in perm]
    index_map = np.zeros((4, 4))  # disk voxel index -> canonical voxel index
    index_map[3, 3] = 1.0
    for disk_axis, canon_axis in enumerate(perm):
        index_map[canon_axis, disk_axis] = -1.0 if flips[disk_axis] else 1.0
        index_map[canon_axis, 3] = disk_shape[disk_axis] - 1.0 if flips[disk_axis] else 0.0
    flip_axes = tuple(int(i) for i in np.flatnonzero(flips))

    def move(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.flip(np.transpose(array, perm), axis=flip_axes))

    return move(image), move(label), affine @ index_map


def synth_case(
    domain: str, *, seed: int, index: int, config: PhantomConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One phantom case: (image int16, label uint8, 4x4 RAS affine), arrays in on-disk voxel order.

    Pure: the result depends only on the arguments, not on other cases generated before.
    """
    _check_domain(domain)
    for name, value in (("seed", seed), ("index", index)):
        if not _is_int(value) or value < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
    image, label, affine = _render(domain, seed=int(seed), index=int(index), config=config)
    disk_rng = _streams(domain, int(seed), int(index))[4]
    image16 = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
    return _to_disk(image16, label, affine, disk_rng)


def _check_domain(domain: str) -> None:
    if domain not in PHANTOM_DOMAINS:
        raise UnknownNameError("phantom domain", domain, PHANTOM_DOMAINS)


def case_name(domain: str, index: int) -> str:
    """File name of a phantom case: ``<domain>_000.nii.gz``."""
    return f"{domain}_{index:03d}.nii.gz"


def synth_dataset(
    out: Path,
    *,
    domains: Sequence[str] = PHANTOM_DOMAINS,
    cases: int = 8,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    overwrite: bool = False,
) -> list[Path]:
    """Write MSD folders ``out/<domain>/{imagesTr,labelsTr,dataset.json}``; returns the files written.

    Refuses to write into a non-empty domain folder unless ``overwrite``; with it, phantom case files
    of an earlier run that are beyond ``cases`` are removed so that the folder matches dataset.json.
    """
    if not _is_int(cases) or cases < 1:
        raise ConfigError(f"cases must be an integer >= 1, got {cases!r}")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if not domains:
        raise ConfigError(f"domains must name at least one of {', '.join(PHANTOM_DOMAINS)}")
    for domain in domains:
        _check_domain(domain)
    if len(set(domains)) != len(domains):
        raise ConfigError(f"domains must not repeat a name, got {' '.join(domains)}")
    out = Path(out).expanduser()
    folders = [out / domain for domain in domains]
    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
            raise OutputExistsError(folder)
    written: list[Path] = []
    for domain, folder in zip(domains, folders, strict=True):
        for index in range(cases):
            image, label, affine = synth_case(domain, seed=seed, index=index, config=config)
            name = case_name(domain, index)
            write_volume(image, affine, folder / "imagesTr" / name, overwrite=overwrite)
            write_volume(label, affine, folder / "labelsTr" / name, overwrite=overwrite)
            written += [folder / "imagesTr" / name, folder / "labelsTr" / name]
        _remove_stale(folder, domain, cases)
        text = json.dumps(_dataset_json(domain, cases, seed, config), indent=2) + "\n"
        write_text_atomic(folder / "dataset.json", text, overwrite=overwrite)
        written.append(folder / "dataset.json")
    return written


def _remove_stale(folder: Path, domain: str, cases: int) -> None:
    pattern = re.compile(rf"{re.escape(domain)}_(\d{{3,}})\.nii\.gz")
    for sub in ("imagesTr", "labelsTr"):
        for path in (folder / sub).glob(f"{domain}_*.nii.gz"):
            match = pattern.fullmatch(path.name)
            if match and int(match.group(1)) >= cases:
                path.unlink()


def _dataset_json(domain: str, cases: int, seed: int, config: PhantomConfig) -> dict[str, object]:
    names = [case_name(domain, i) for i in range(cases)]
    return {
        "name": domain,
        "description": f"pedseg phantom {domain} (synthetic T1-like MR, bones)",
        "reference": "synthetic; generated by pedseg synth",
        "licence": "CC0-1.0",
        "release": __version__,
        "tensorImageSize": "3D",
        "modality": {"0": "MR"},
        "labels": {"0": "background", **{str(i): n for i, n in PHANTOM_LABELS[domain]}},
        "numTraining": cases,
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"} for n in names],
        "test": [],
        "pedseg_phantom": {"seed": seed, **asdict(config)},
    }
