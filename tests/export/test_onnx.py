"""Per-domain ONNX export: parity with PyTorch, folded batch norms, metadata, dynamic shapes, refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import parse_descriptor
from pedseg.errors import (
    ConfigError,
    IntegrityError,
    ModelError,
    OutputExistsError,
    UnknownNameError,
)
from pedseg.export.fold import fold_batchnorm, fold_segmenter
from pedseg.export.onnx import (
    DIGEST_KEY,
    METADATA_KEYS,
    ExportReport,
    check_sizes,
    export_domain,
    export_run,
    load_onnx_model,
    read_onnx_metadata,
)
from pedseg.inference.predictor import open_predictor
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.models.segmenter import DomainSegmenter
from pedseg.runfolder.loading import LoadedRun, load_run
from tests.conftest_runs import copy_run, single_thread


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(["probabilities"], {"image": x})
    return np.asarray(out)


def _torch(run: LoadedRun, domain: str, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return run.domain(domain).module(torch.from_numpy(x.astype(np.float32))).numpy()


def _random(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def exported(
    tiny_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LoadedRun, list[ExportReport]]:
    run = load_run(tiny_run)
    with single_thread():
        return run, export_run(run, out_dir=tmp_path_factory.mktemp("onnx"))


def test_export_matches_pytorch_as_reported_and_remeasured(
    exported: tuple[LoadedRun, list[ExportReport]],
) -> None:
    run, reports = exported
    assert [r.domain for r in reports] == ["ankle", "shoulder"]
    for report in reports:
        assert report.path.name == f"{report.domain}.onnx" and report.path.is_file()
        assert 0.0 <= report.max_abs_diff <= 1e-4
        assert report.seconds > 0
        sizes = {(h, w) for _, h, w in report.sizes_checked}
        assert sizes == {(32, 32), (16, 16), (48, 48)}
        assert {b for b, _, _ in report.sizes_checked} == {1, 3}
        x = _random(3, 1, 32, 32, seed=7)
        diff = np.abs(_ort(report.path, x) - _torch(run, report.domain, x)).max()
        assert diff <= 1e-4


def test_dynamic_batch_height_and_width(exported: tuple[LoadedRun, list[ExportReport]]) -> None:
    run, reports = exported
    model, _ = load_onnx_model(reports[1].path)
    assert [o.name for o in model.graph.output] == ["probabilities", "embedding"]
    for value in (*model.graph.input, model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    embedding_dims = model.graph.output[1].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in embedding_dims] == [True, False]  # (batch, D)
    x = _random(2, 1, 24, 40, seed=3)  # non-square, a size never used while exporting
    probabilities = _ort(reports[1].path, x)
    assert probabilities.shape == (2, 3, 24, 40)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, _torch(run, "shoulder", x), atol=1e-4, rtol=0)


def test_embedding_output_is_the_runs_embedding_of_the_same_pass(
    exported: tuple[LoadedRun, list[ExportReport]],
) -> None:
    """The second output is what recognition embeds with (the unfolded net, the domain's head),
    at a size and batch never used while exporting; the export reported its check."""
    run, reports = exported
    for report in reports:
        assert report.embedding_diff is not None and 0.0 <= report.embedding_diff <= 1e-4
        x = _random(5, 1, 40, 24, seed=11)
        session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
        probabilities, z = session.run(["probabilities", "embedding"], {"image": x})
        domain = run.domain(report.domain)
        assert domain.embed is not None
        expected = domain.embed(torch.from_numpy(x)).numpy()
        assert z.shape == expected.shape == (5, expected.shape[1])
        scale = max(1.0, float(np.abs(expected).max()))
        assert float(np.abs(z - expected).max()) / scale <= 1e-4
        np.testing.assert_allclose(probabilities, _torch(run, report.domain, x), atol=1e-4)


def test_metadata_round_trip(exported: tuple[LoadedRun, list[ExportReport]]) -> None:
    run, reports = exported
    meta = read_onnx_metadata(reports[0].path)
    assert set(meta) == {*METADATA_KEYS, DIGEST_KEY} and len(meta[DIGEST_KEY]) == 64
    spec = run.domain("ankle").spec
    assert meta["domain"] == "ankle" and meta["normalization"] == "zscore"
    assert json.loads(meta["labels"]) == {"1": "calcaneus", "2": "talus", "3": "tibia"}
    assert json.loads(meta["image_size"]) == [32, 32]
    assert meta["slice_axis"] == "auto" and meta["precision"] == "fp32"
    assert meta["model_sha256"] == run.card.model_sha256
    assert meta["scheme"] == "dsl-contrastive" and meta["arch"] == "unet"
    assert json.loads(meta["postprocess"]) == spec.postprocess.to_dict()
    components = {k: tuple(v) for k, v in json.loads(meta["components"]).items()}
    assert components == run.domain("ankle").components and set(components) == set(spec.label_names)
    assert json.loads(meta["label_chain"]) is None  # the phantom bones are no series
    raw = json.loads(meta["descriptor"])
    raw["labels"] = {int(k): v for k, v in raw["labels"].items()}
    rebuilt = parse_descriptor(raw, source="metadata")
    assert rebuilt.content_hash() == meta["descriptor_hash"] == spec.content_hash()
    blob = reports[0].path.read_bytes()
    assert str(run.path).encode() not in blob  # no paths in exported models


def test_batchnorm_is_folded_and_exact(exported: tuple[LoadedRun, list[ExportReport]]) -> None:
    _, reports = exported
    model, _ = load_onnx_model(reports[0].path)
    ops = {node.op_type for node in model.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops and "Softmax" in ops
    assert len(model.graph.input) == 1  # weights are initializers, not inputs


@pytest.mark.parametrize("arch", ["unet", "attention-unet"])
@pytest.mark.parametrize("domain", [0, 1])
def test_fold_batchnorm_equals_the_unfolded_model(arch: str, domain: int) -> None:
    torch.manual_seed(domain)
    net = build_model(ModelConfig(arch=arch, base_width=4, depth=3), num_classes=[3, 4])
    for module in net.modules():  # non-trivial statistics and affine parameters per domain
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            with torch.no_grad():
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net, domain)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d | DomainBatchNorm2d) for m in folded.modules()
    )
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            folded.forward_domain(x, domain), net.forward_domain(x, domain), rtol=1e-5, atol=1e-5
        )
        seg = DomainSegmenter(net, head=domain)
        torch.testing.assert_close(fold_segmenter(seg)(x), seg(x), rtol=1e-5, atol=1e-6)
    for key, value in net.state_dict().items():  # the original is untouched
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("fixture", ["tiny_joint_run", "tiny_baseline_run"])
def test_joint_and_baseline_runs_export_per_domain(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run = load_run(request.getfixturevalue(fixture))
    reports = export_run(run, out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ankle.onnx", "shoulder.onnx"]
    x = _random(1, 1, 32, 32, seed=5)
    for report, classes in zip(reports, (4, 3), strict=True):
        assert report.max_abs_diff <= 1e-4
        out = _ort(report.path, x)
        assert out.shape == (1, classes, 32, 32)
        np.testing.assert_allclose(out, _torch(run, report.domain, x), atol=1e-4, rtol=0)
        meta = read_onnx_metadata(report.path)
        assert meta["scheme"] == run.card.scheme
        assert meta["model_sha256"] == run.domain(report.domain).model_sha256


def test_fp16_export(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    (report,) = export_run(run, domains=["shoulder"], out_dir=tmp_path, fp16=True)
    assert report.max_abs_diff <= 2e-2
    model, meta = load_onnx_model(report.path)
    assert meta["precision"] == "fp16"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    x = _random(2, 1, 32, 32, seed=9)
    out = _ort(report.path, x.astype(np.float16))
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), _torch(run, "shoulder", x), atol=2e-2)


def test_external_data_is_refused(
    exported: tuple[LoadedRun, list[ExportReport]], tmp_path: Path
) -> None:
    model, _ = load_onnx_model(exported[1][0].path)
    target = tmp_path / "external.onnx"
    onnx.save_model(
        model,
        str(target),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    assert (tmp_path / "w.bin").is_file()
    with pytest.raises(ModelError, match="external data file"):
        load_onnx_model(target)
    with pytest.raises(ModelError, match="external data file"):
        read_onnx_metadata(target)


def test_unreadable_or_missing_onnx_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such ONNX file"):
        load_onnx_model(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff\x00not a model" * 10)
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_onnx_model(tmp_path / "junk.onnx")


def test_existing_files_are_not_overwritten(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    (tmp_path / "shoulder.onnx").write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match=r"shoulder.onnx: already exists; pass --overwrite"):
        export_run(run, out_dir=tmp_path)
    assert not (tmp_path / "ankle.onnx").exists()  # checked before anything is written
    assert (tmp_path / "shoulder.onnx").read_bytes() == b"mine"
    reports = export_run(run, out_dir=tmp_path, overwrite=True)
    assert len(reports) == 2
    read_onnx_metadata(tmp_path / "shoulder.onnx")


def test_default_folder_is_run_onnx(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(copy_run(tiny_run, tmp_path / "run"))
    (report,) = export_run(run, domains=["ankle"])
    assert report.path == tmp_path / "run" / "onnx" / "ankle.onnx"


def test_failed_verification_leaves_nothing(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pedseg.export.onnx.FP32_TOLERANCE", -1.0)
    with pytest.raises(ModelError, match="differs from PyTorch.*nothing was written"):
        export_domain(load_run(tiny_run).domain("ankle"), tmp_path / "ankle.onnx")
    assert list(tmp_path.iterdir()) == []


def test_domain_selection_errors(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    with pytest.raises(UnknownNameError, match="domain of this model 'knee'"):
        export_run(run, domains=["knee"], out_dir=tmp_path)
    with pytest.raises(ConfigError, match="'ankle' is given twice"):
        export_run(run, domains=["ankle", "ankle"], out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_sizes() -> None:
    assert check_sizes((256, 256), 16) == [(256, 256), (128, 128), (384, 384)]
    assert check_sizes((32, 48), 4) == [(32, 48), (16, 24), (48, 72)]
    assert check_sizes((16, 16), 16) == [(16, 16), (32, 32), (48, 48)]


def test_a_flipped_byte_in_an_export_is_refused(
    exported: tuple[LoadedRun, list[ExportReport]], tmp_path: Path
) -> None:
    """A bit flipped inside a weight still parses; the sealed content digest catches it."""
    _, reports = exported
    data = bytearray(reports[0].path.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged = tmp_path / "ankle.onnx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="ankle.onnx: content SHA-256 .* does not match"):
        load_onnx_model(damaged)


def test_the_label_chain_travels_with_the_export(tiny_run: Path, tmp_path: Path) -> None:
    run = load_run(tiny_run)
    chain = LabelChain(("tibia", "talus", "calcaneus"), 2, 9.0, 6.0, 400.0, 100.0, "test")
    domain = replace(run.domain("ankle"), label_chain=chain)
    with single_thread():
        export_domain(domain, tmp_path / "ankle.onnx")
    predictor = open_predictor(tmp_path / "ankle.onnx", domain="ankle")
    assert predictor.info.label_chain == chain
    rule = predictor.info.chain_rule()
    assert rule is not None and rule.ids == (3, 2, 1)
