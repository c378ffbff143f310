"""``pedseg predict --outputs``: clinical outputs written with the label map, all or nothing."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import nrrd
import pytest
import trimesh

from pedseg.inference import writing
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import phantom_dir, single_thread, tiny_run_dir


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "1")
    with single_thread():
        yield


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run_dir(tmp_path_factory)


@pytest.fixture
def scans(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted((phantom_dir(tmp_path_factory) / "ankle" / "imagesTr").iterdir())[:2]:
        shutil.copy(path, folder / path.name)
    return folder


OUTPUTS = "seg-nrrd,mesh-stl,stats,preview-3d"


def test_predict_writes_clinical_outputs_and_continue_knows_them(
    pedseg: Runner, run: Path, scans: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("predict", str(scans), "-d", "ankle", "-m", str(run), "-o", str(out), "-q")
    result = pedseg(*args, "--outputs", OUTPUTS, "--mesh-smoothing", "5")
    assert result.code == 0, result.err
    cases = sorted(p.name.removesuffix(".nii.gz") for p in scans.iterdir())
    for case in cases:
        for tail in (".nii.gz", ".json", ".seg.nrrd", "_statistics.csv", "_preview3d.png"):
            assert (out / f"{case}{tail}").is_file(), f"{case}{tail}"
        for label in ("calcaneus", "talus", "tibia"):  # an absent label: a valid empty mesh
            mesh = trimesh.load(out / f"{case}_{label}.stl")
            assert isinstance(mesh, trimesh.Trimesh | trimesh.Scene)
        _, header = nrrd.read(str(out / f"{case}.seg.nrrd"))
        assert header["Segment0_Name"] == "calcaneus"
        report = json.loads((out / f"{case}.json").read_text())
        assert report["outputs"]["seg-nrrd"] == f"{case}.seg.nrrd"
        assert {row["label"] for row in report["statistics"]} == {"calcaneus", "talus", "tibia"}
        entry = json.loads((out / "pedseg-predict.json").read_text())["cases"][case]
        assert f"{case}_talus.stl" in entry["outputs"] and f"{case}.seg.nrrd" in entry["outputs"]
    with (out / "statistics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted({row["case"] for row in rows}) == cases and len(rows) == 3 * len(cases)
    # --continue: done cases are done only while every output is there
    again = pedseg(*args, "--outputs", OUTPUTS, "--continue")
    assert again.code == 0 and "2 already done" in again.out
    (out / f"{cases[0]}_tibia.stl").unlink()
    again = pedseg(*args, "--outputs", OUTPUTS, "--continue")  # the incomplete case is redone...
    assert again.code == 0 and "1 case predicted, 1 already done" in again.out
    assert (out / f"{cases[0]}_tibia.stl").is_file()
    # ...and without --continue nothing is overwritten
    refused = pedseg(*args, "--outputs", OUTPUTS)
    assert "already exists" in one_line_error(refused)


def test_bad_output_options_are_one_line_errors(
    pedseg: Runner, run: Path, scans: Path, tmp_path: Path
) -> None:
    base = ("predict", str(scans), "-d", "ankle", "-m", str(run), "-o", str(tmp_path / "o"))
    for extra, message in (
        (("--outputs", "mesh-xyz"), "unknown format 'mesh-xyz'"),
        (("--outputs", "mesh", "--mesh-format", "vtk"), "--mesh-format: unknown format 'vtk'"),
        (("--outputs", "mesh", "--mesh-decimate", "0"), "--mesh-decimate must be"),
        (("--outputs", "dicom-seg"), "dicom-seg needs a DICOM series folder"),
    ):
        assert message in one_line_error(pedseg(*base, *extra)), extra
    assert not (tmp_path / "o").exists()


def test_a_failing_output_leaves_none_of_the_case(
    pedseg: Runner, run: Path, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pedseg.errors import VolumeError
    from pedseg.outputs import case as case_module

    def broken(*args: object, **kwargs: object) -> None:
        raise VolumeError("preview", "disk full")

    monkeypatch.setattr(case_module, "write_preview_3d", broken)
    out = tmp_path / "out"
    result = pedseg(
        "predict", str(scans), "-d", "ankle", "-m", str(run), "-o", str(out), "--outputs", OUTPUTS
    )
    assert result.code == 1 and "disk full" in result.err
    assert sorted(p.name for p in out.iterdir()) == [".pedseg-predict.lock", "pedseg-predict.json"]


def test_the_report_is_moved_into_place_last(
    pedseg: Runner, run: Path, scans: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved: list[str] = []
    real = writing.atomic_path

    def recording(path: Path, **kwargs: object):  # type: ignore[no-untyped-def]
        import contextlib

        @contextlib.contextmanager
        def wrapper():  # type: ignore[no-untyped-def]
            with real(path, **kwargs) as tmp:  # type: ignore[arg-type]
                yield tmp
            moved.append(Path(path).name)

        return wrapper()

    monkeypatch.setattr(writing, "atomic_path", recording)
    scan = sorted(scans.iterdir())[0]
    out = tmp_path / "seg.nii.gz"
    result = pedseg(
        "predict", str(scan), "-d", "ankle", "-m", str(run), "-o", str(out), "--preview"
    )
    assert result.code == 0, result.err
    assert moved[-1] == "seg.json" and "seg.nii.gz" in moved
