"""Overlay, boxplot and t-SNE figures: PNGs of the expected size, built from the expected slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedseg.domains.spec import DataSpec, DomainSpec
from pedseg.errors import ConfigError
from pedseg.evaluation.compare import load_method
from pedseg.evaluation.plots import (
    EmbeddingPanel,
    overlay_figure,
    overlay_grid,
    overlay_rows,
    tsne_figure,
)
from pedseg.io import write_volume
from tests.evaluation.test_compare import case_dice, write_method

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def disc(shape: tuple[int, int], centre: tuple[int, int], radius: float, value: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    return np.where(inside, value, 0).astype(np.uint8)


def test_overlay_figure_png(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(48, 40)).astype(np.float32)
    reference = disc((48, 40), (20, 20), 8, 1) + disc((48, 40), (35, 12), 5, 2)
    predictions = {"A": disc((48, 40), (21, 20), 8, 1), "B": np.zeros((48, 40), np.uint8)}
    path = overlay_figure(
        image, reference, predictions, {1: "tibia", 2: "talus"}, tmp_path / "o.png"
    )
    width, height = png_size(path)
    assert width > height  # two columns, one row
    with pytest.raises(ConfigError, match="overlay prediction of A must be a 2D slice"):
        overlay_figure(image, reference, {"A": reference[:10]}, {1: "x"}, tmp_path / "bad.png")


def test_overlay_rows_from_prediction_folders(tmp_path: Path) -> None:
    shape = (24, 20, 6)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])  # axis 2 has the largest spacing: the slice axis
    data = tmp_path / "data"
    reference = np.zeros(shape, np.uint8)
    reference[5:15, 5:12, 4] = 1  # the largest reference area is on slice 4
    reference[8:10, 8:10, 1] = 1
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    write_volume(image, affine, data / "imagesTr" / "c1_0000.nii.gz")
    write_volume(reference, affine, data / "labelsTr" / "c1.nii.gz")
    write_volume(image, affine, data / "imagesTr" / "c2_0000.nii.gz")
    write_volume(reference, affine, data / "labelsTr" / "c2.nii.gz")
    methods = []
    for name, shift in (("m1", 0), ("m2", 2)):
        folder = write_method(tmp_path / "cv" / name, case_dice([0.9]))
        predicted = np.roll(reference, shift, axis=0)
        write_volume(predicted, affine, folder / "predictions" / "ankle" / "c1.nii.gz")
        methods.append(load_method(folder))
    # A `pedseg evaluate` output folder: its predictions are the files of its parent folder.
    evaluated = write_method(tmp_path / "pred" / "evaluation", case_dice([0.9]))
    write_volume(reference, affine, tmp_path / "pred" / "c1.nii.gz")
    methods.append(load_method(evaluated, name="pred"))
    spec = DomainSpec(
        name="ankle", labels=((1, "tibia"),), normalization="zscore",
        data=DataSpec(root=data),
    )  # fmt: skip
    rows = overlay_rows(methods, spec)
    assert len(rows) == 1  # c2 has no prediction
    row = rows[0]
    assert row.title == "ankle c1 (slice 4)"
    np.testing.assert_array_equal(row.reference, reference[:, :, 4])
    np.testing.assert_array_equal(row.predictions["m2"], np.roll(reference, 2, axis=0)[:, :, 4])
    assert list(row.predictions) == ["m1", "m2", "pred"]
    np.testing.assert_allclose(row.image, image[:, :, 4], rtol=1e-6)
    path = overlay_grid(rows, {1: "tibia"}, tmp_path / "grid.png", title="ankle")
    assert png_size(path)[0] > 300


def test_tsne_figure_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    panels = [
        EmbeddingPanel(
            title=f"epoch {e}",
            coords=rng.normal(size=(30, 2)),
            domains=np.array(["ankle"] * 15 + ["shoulder"] * 15),
            validation=np.arange(30) % 5 == 0,
        )
        for e in (1, 2, 3, 4)
    ]
    width, height = png_size(tsne_figure(panels, tmp_path / "t.png"))
    assert width > height  # 3 columns, 2 rows
    with pytest.raises(ConfigError):
        tsne_figure([], tmp_path / "none.png")
