"""The int8 export of a run: QDQ graph with per-channel weights, metadata, calibration on training
slices, verification on validation cases (a failed one writes nothing), overwrite refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pedseg.errors import ConfigError, ModelError, OutputExistsError
from pedseg.export import int8_check, quantize
from pedseg.export.cpu import cpu_model
from pedseg.export.onnx import (
    DIGEST_KEY,
    METADATA_KEYS,
    export_run,
    load_onnx_model,
    read_onnx_metadata,
)
from pedseg.export.quantize import INT8_METADATA_KEYS, Int8Options, data_specs
from pedseg.inference.backends import OnnxBackend
from pedseg.inference.int8_export import Int8Report, export_int8_run
from pedseg.runfolder.checkpoint import read_state
from pedseg.runfolder.loading import LoadedRun, load_run
from tests.conftest_runs import copy_run, phantom_dir, tiny_run_dir

DOMAIN = "ankle"


def _specs(run: LoadedRun, factory: pytest.TempPathFactory) -> dict[str, object]:
    phantoms = phantom_dir(factory)
    return dict(data_specs(run, [DOMAIN], {DOMAIN: phantoms / DOMAIN}))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedRun, Int8Report]:
    """The tiny run (a private copy) with its fp32 and int8 exports of ``ankle`` in RUN/onnx."""
    folder = copy_run(tiny_run_dir(tmp_path_factory), tmp_path_factory.mktemp("int8") / "run")
    run = load_run(folder)
    export_run(run, domains=[DOMAIN])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEDSEG_HOME", str(tmp_path_factory.mktemp("int8_home")))
        (report,) = export_int8_run(run, _specs(run, tmp_path_factory), domains=[DOMAIN])  # type: ignore[arg-type]
    return run, report


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_int8_graph_is_qdq_with_per_channel_weights_and_runs(
    exported: tuple[LoadedRun, Int8Report],
) -> None:
    run, report = exported
    assert report.path == run.layout.onnx_int8(DOMAIN) == run.path / "onnx" / "ankle.int8.onnx"
    model, _ = load_onnx_model(report.path)
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops  # up-sampling rewritten
    producers = {out: node for node in model.graph.node for out in node.output}
    values = _initializers(model)
    quantised = 0
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    kept_float = [c.name for c in convs if c.input[1] not in producers]
    # The full-resolution encoder level and the head convolution (before the softmax) stay float.
    assert kept_float == ["/encoders.0/conv1/Conv", "/encoders.0/conv2/Conv", "/heads.0/Conv"]
    assert all(values[c.input[1]].dtype == np.float32 for c in convs if c.name in kept_float)
    for conv in convs:
        weight = producers.get(conv.input[1])
        if weight is None:
            continue
        assert weight.op_type == "DequantizeLinear"
        scale, zero = values[weight.input[1]], values[weight.input[2]]
        out_channels = values[weight.input[0]].shape[0]
        assert values[weight.input[0]].dtype == np.int8
        assert scale.shape == (out_channels,) and out_channels > 1  # one scale per channel
        assert len(set(scale.tolist())) > 1 and not np.any(zero)
        quantised += 1
    assert quantised >= 8
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert producers[softmax.input[0]].op_type == "Conv"  # float logits, float probabilities

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 48)).astype(np.float32)
    (probabilities,) = session.run(["probabilities"], {"image": x})
    assert probabilities.shape == (3, 4, 32, 48) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_int8_metadata_and_report(exported: tuple[LoadedRun, Int8Report]) -> None:
    run, report = exported
    meta = read_onnx_metadata(report.path)
    assert set(meta) == {*METADATA_KEYS, *INT8_METADATA_KEYS, DIGEST_KEY}
    fp32 = read_onnx_metadata(run.layout.onnx(DOMAIN))
    for key in METADATA_KEYS:
        if key != "precision":
            assert meta[key] == fp32[key], key
    assert meta["precision"] == "int8" and meta["model_sha256"] == run.card.model_sha256
    calibration = json.loads(meta["calibration"])
    state = read_state(run.layout.checkpoint("latest"))
    val = state["val_cases"][DOMAIN]
    train_slices = 16 * (3 - len(val))  # three 32x32x16 phantoms per domain, slices along z
    assert calibration == dict(report.calibration)
    assert calibration["slices"] == train_slices and calibration["cases"] == 3 - len(val)
    assert calibration["method"] == "minmax" and calibration["format"] == "QDQ"
    assert calibration["activations"] == "uint8" and calibration["weights"].startswith("int8")
    assert calibration["float"] == "first encoder level, head, softmax"
    verification = json.loads(meta["verification"])
    assert verification == report.verification.to_dict()
    assert verification["passed"] is True and verification["cases"] == len(val)
    assert verification["agreement_min"] >= 0.98
    assert set(verification["dice_int8"]) == {"calcaneus", "talus", "tibia"}
    speed = json.loads(meta["speed"])
    assert speed["cpu"] == cpu_model() and speed["batch"] == 8 and speed["image_size"] == [32, 32]
    assert speed["fp32_slices_per_s"] > 0 and speed["int8_slices_per_s"] > 0
    assert str(run.path).encode() not in report.path.read_bytes()  # no paths in the model


def test_calibrates_on_training_slices_only(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_run(copy_run(tiny_run_dir(tmp_path_factory), tmp_path / "run"))
    seen: list[np.ndarray] = []
    original = quantize._calibration_images

    def spy(images: np.ndarray, indices: np.ndarray, *args: object) -> np.ndarray:
        seen.append(np.asarray(images[indices]))
        return original(images, indices, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(quantize, "_calibration_images", spy)
    options = Int8Options(calibration_slices=10, seed=3)
    (report,) = export_int8_run(
        run, _specs(run, tmp_path_factory), domains=[DOMAIN], options=options
    )  # type: ignore[arg-type]
    from pedseg.data.cache import build_cache

    spec = _specs(run, tmp_path_factory)[DOMAIN]
    cache = build_cache(spec, image_size=(32, 32))  # type: ignore[arg-type]
    val = read_state(run.layout.checkpoint("latest"))["val_cases"][DOMAIN]
    val_images = np.asarray(cache.images[cache.slices_of(val)])
    train = [c.case_id for c in cache.cases if c.case_id not in val]
    (candidates,) = seen
    assert candidates.shape[0] == 16 * len(train)
    np.testing.assert_array_equal(candidates, np.asarray(cache.images[cache.slices_of(train)]))
    assert not any(np.array_equal(v, c) for v in val_images for c in candidates)
    assert report.calibration["slices"] == 10


def test_failed_verification_writes_nothing(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = load_run(copy_run(tiny_run_dir(tmp_path_factory), tmp_path / "run"))
    monkeypatch.setattr(int8_check, "AGREEMENT_MIN", 1.01)  # no graph can agree this well
    out = tmp_path / "exports"
    with pytest.raises(
        ModelError,
        match=r"failed verification .* agreement with fp32 min [0-9.]+ "
        r"\(needs >= 1\.01\).*nothing was written",
    ):
        export_int8_run(run, _specs(run, tmp_path_factory), domains=[DOMAIN], out_dir=out)  # type: ignore[arg-type]
    assert not out.exists() or list(out.iterdir()) == []


def test_refuses_to_overwrite_without_the_flag(
    exported: tuple[LoadedRun, Int8Report], tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, report = exported
    before = report.path.read_bytes()
    with pytest.raises(
        OutputExistsError, match=r"ankle\.int8\.onnx: already exists; pass --overwrite"
    ):
        export_int8_run(run, _specs(run, tmp_path_factory), domains=[DOMAIN])  # type: ignore[arg-type]
    assert report.path.read_bytes() == before


def test_options_and_data_are_checked(
    exported: tuple[LoadedRun, Int8Report], tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, _ = exported
    with pytest.raises(ConfigError, match="--calibration must be one of minmax, entropy"):
        Int8Options(method="kl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"--calibration-slices must be in \[1, 1000\]"):
        Int8Options(calibration_slices=0)
    with pytest.raises(ConfigError, match="--data names domain 'knee' which is not exported"):
        data_specs(run, [DOMAIN], {"knee": Path("x")})
    with pytest.raises(ConfigError, match="twice"):
        export_int8_run(run, _specs(run, tmp_path_factory), domains=[DOMAIN, DOMAIN])  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture", ["tiny_joint_run", "tiny_baseline_run"])
def test_joint_and_baseline_runs_export_int8(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run = load_run(request.getfixturevalue(fixture))
    specs = data_specs(
        run, [DOMAIN], {DOMAIN: phantom_dir(request.getfixturevalue("tmp_path_factory")) / DOMAIN}
    )
    (report,) = export_int8_run(run, specs, domains=[DOMAIN], out_dir=tmp_path)
    assert report.path == tmp_path / "ankle.int8.onnx" and report.verification.passed
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32)
    (probabilities,) = session.run(["probabilities"], {"image": x})
    assert probabilities.shape == (2, 4, 32, 32)  # joint: the union head projected onto ankle
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_int8_graph_has_no_embedding_output_and_the_fp32_one_has(
    exported: tuple[LoadedRun, Int8Report],
) -> None:
    """The int8 graph stays probabilities-only (its quantised embedding would not be the one the
    profiles were measured with): the domain check embeds with PyTorch for it, while the fp32
    export beside it carries the embedding output."""
    from pedseg.inference.predictor import open_predictor

    run, report = exported
    int8 = OnnxBackend(report.path, device="cpu", threads=1)
    assert not int8.embeds
    predictor = open_predictor(report.path, report.domain, device="cpu")
    assert predictor.backend.name == "onnx-int8" and not predictor.embeds
    fp32 = run.layout.onnx(report.domain)
    assert OnnxBackend(fp32, device="cpu", threads=1).embeds
