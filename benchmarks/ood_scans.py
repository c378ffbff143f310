"""Out-of-distribution scans for the benchmarks: things a user may plausibly feed by mistake.

Shared by ``bench_recognition.py`` (embedding distance only) and ``bench_ood.py`` (every check of
``pedseg predict``). Each variant of a real scan keeps its affine, so only the content is wrong:

* ``inverted``: intensities inverted (``max - x``: another contrast, as a T2-weighted or
  fat-suppressed scan of the right anatomy would look to a T1 model);
* ``swapped``: the first two array axes transposed, the affine kept (a wrongly recorded
  orientation);
* ``noise``: smooth random noise with the geometry and intensity scale of the scan;
* ``blank-zero`` / ``blank-constant``: every voxel 0, or every voxel the scan's median;

and :func:`phantoms` writes scans of another anatomy (ankle, shoulder: pedseg's own synthetic MR).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import zoom as resize

from pedseg.data.synth import PhantomConfig, synth_dataset

KINDS = ("inverted", "swapped", "noise", "blank-zero", "blank-constant")
PHANTOM_DOMAINS = ("ankle", "shoulder")


def derived(tmp: Path, source: Path, kind: str, seed: int) -> Path:
    """Write the ``kind`` variant of ``source`` (same affine) into ``tmp`` and return its path."""
    image = nib.load(source)
    if not isinstance(image, nib.Nifti1Image):
        raise TypeError(f"{source}: expected a NIfTI-1 image")
    data = np.asarray(image.dataobj, dtype=np.float32)
    if kind == "inverted":
        out = data.max() - data
    elif kind == "swapped":
        out = np.ascontiguousarray(np.swapaxes(data, 0, 1))
    elif kind == "noise":
        rng = np.random.default_rng(seed)
        coarse = rng.random((8, 8, 8)).astype(np.float32)
        zoom = [n / 8 for n in data.shape]
        out = resize(coarse, zoom, order=1)[: data.shape[0], : data.shape[1], : data.shape[2]]
        out = out * float(data.max()) + rng.normal(0, 0.05 * float(data.max()), out.shape)
    elif kind == "blank-zero":
        out = np.zeros_like(data)
    elif kind == "blank-constant":
        out = np.full_like(data, float(np.median(data)))
    else:
        raise ValueError(kind)
    path = tmp / f"{kind}-{source.name}"
    nib.save(nib.Nifti1Image(out.astype(np.float32), image.affine), path)
    return path


def phantoms(folder: Path, *, cases: int = 3, seed: int = 7) -> list[tuple[str, Path]]:
    """``cases`` phantom scans of each of :data:`PHANTOM_DOMAINS`: ``(domain, image path)``."""
    written = synth_dataset(
        folder, domains=PHANTOM_DOMAINS, cases=cases, seed=seed, config=PhantomConfig()
    )
    images = sorted(p for p in written if "imagesTr" in p.parts)
    return [(p.parts[-3], p) for p in images]
