"""Backends: device rules (no CUDA on this CPU machine), threads, onnx/torch agreement, fp16 I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DeviceError, ModelError
from pedseg.inference import backends
from pedseg.inference.backends import (
    OnnxBackend,
    TorchBackend,
    embedding_call,
    gpu_present,
    num_threads,
    parse_device,
    run_batches,
)

NO_GPU = not torch.cuda.is_available() and not gpu_present()
cpu_only = pytest.mark.skipif(not NO_GPU, reason="needs a machine without a GPU")


def tiny_domain_model(tmp_path: Path, *, classes: int = 3) -> tuple[Any, Path]:
    """A random tiny UNet for one domain, exported (and verified) by pedseg.export."""
    from pedseg.export.onnx import export_domain
    from pedseg.models import ModelConfig, build_model
    from pedseg.models.segmenter import DomainSegmenter
    from pedseg.runfolder.loading import DomainModel

    torch.manual_seed(0)
    net = build_model(ModelConfig(base_width=4, depth=3), num_classes=[classes]).eval()
    spec = DomainSpec(
        name="toy",
        labels=tuple((i, f"l{i}") for i in range(1, classes)),
        normalization="zscore",
        image_size=(16, 16),
    )
    model = DomainModel(
        spec=spec,
        image_size=(16, 16),
        module=DomainSegmenter(net, head=0).eval(),
        model_sha256="ab" * 32,
        scheme="dsl",
        embed=None,
    )
    path = tmp_path / "toy.onnx"
    export_domain(model, path)
    return model, path


def test_parse_device() -> None:
    assert parse_device("auto").kind == "auto"
    assert parse_device(" CPU ").kind == "cpu"
    assert parse_device("cuda").label == "cuda"
    assert parse_device("cuda:1").index == 1 and parse_device("cuda:1").label == "cuda:1"
    for bad in ("gpu", "cuda:x", "cuda:", ""):
        with pytest.raises(ConfigError, match="--device must be"):
            parse_device(bad)


def test_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "3")
    assert num_threads() == 3
    monkeypatch.delenv("PEDSEG_NUM_THREADS")
    assert 1 <= num_threads() <= (__import__("os").cpu_count() or 1)
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "zero")
    with pytest.raises(ConfigError, match="PEDSEG_NUM_THREADS must be a positive integer"):
        num_threads()


@cpu_only
def test_torch_cuda_without_gpu_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="--allow-cpu-fallback"):
        TorchBackend(torch.nn.Identity(), device="cuda")
    backend = TorchBackend(torch.nn.Identity(), device="cuda", allow_cpu_fallback=True, threads=1)
    assert backend.device == "cpu" and backend.name == "torch"
    assert TorchBackend(torch.nn.Identity(), device="auto", threads=1).device == "cpu"


@cpu_only
def test_onnx_cuda_without_gpu(tmp_path: Path) -> None:
    _, path = tiny_domain_model(tmp_path)
    with pytest.raises(DeviceError) as error:
        OnnxBackend(path, device="cuda", threads=1)
    assert "\n" not in str(error.value) and "--device cpu" in str(error.value)
    backend = OnnxBackend(path, device="cuda", allow_cpu_fallback=True, threads=1)
    assert backend.device == "cpu" and backend.name == "onnx"


@cpu_only
def test_auto_does_not_try_cuda_without_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = tiny_domain_model(tmp_path)
    seen: list[Any] = []
    real = ort.InferenceSession

    def spy(source: Any, options: Any, providers: Any) -> Any:
        seen.append(providers)
        return real(source, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    backend = OnnxBackend(path, device="auto", threads=1)
    assert seen == [["CPUExecutionProvider"]]
    assert backend.device == "cpu"
    assert backend.session.get_providers() == ["CPUExecutionProvider"]


def test_onnx_session_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = tiny_domain_model(tmp_path)
    seen: list[Any] = []
    real = ort.InferenceSession

    def spy(source: Any, options: Any, providers: Any) -> Any:
        seen.append(options)
        return real(source, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "2")
    OnnxBackend(path, device="cpu")
    assert seen[0].intra_op_num_threads == 2
    assert seen[0].graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_onnx_and_torch_agree(tmp_path: Path) -> None:
    model, path = tiny_domain_model(tmp_path)
    onnx_backend = OnnxBackend(path.read_bytes(), device="cpu", threads=1, where=path)
    torch_backend = TorchBackend(model.module, device="cpu", threads=1)
    x = np.random.default_rng(0).standard_normal((3, 1, 16, 24)).astype(np.float32)
    a, b = onnx_backend(x), torch_backend(x)
    assert a.shape == b.shape == (3, 3, 16, 24) and a.dtype == b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-4
    assert np.allclose(a.sum(axis=1), 1.0, atol=1e-5)


def test_channels_last_is_only_a_layout(tmp_path: Path) -> None:
    model, _ = tiny_domain_model(tmp_path)
    x = np.random.default_rng(1).standard_normal((2, 1, 16, 16)).astype(np.float32)
    plain = TorchBackend(model.module, device="cpu", channels_last=False, threads=1)(x)
    fast = TorchBackend(model.module, device="cpu", channels_last=True, threads=1)(x)
    assert np.abs(plain - fast).max() < 1e-5


def test_fp16_model_takes_float32_and_returns_float32(tmp_path: Path) -> None:
    node = helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)
    graph = helper.make_graph(
        [node],
        "softmax16",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT16, ["N", 2, "H", "W"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT16, ["N", 2, "H", "W"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "half.onnx"
    onnx.save_model(model, path)
    backend = OnnxBackend(path, device="cpu", threads=1)
    assert backend.fp16
    x = np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32)
    out = backend(x)
    assert out.dtype == np.float32
    expected = torch.softmax(torch.from_numpy(x), dim=1).numpy()
    assert np.abs(out - expected).max() < 2e-3


def test_unloadable_onnx_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot be loaded by onnxruntime"):
        OnnxBackend(path, device="cpu", threads=1)


def test_run_batches_covers_every_slice_in_order() -> None:
    images = np.arange(7 * 2 * 2, dtype=np.float32).reshape(7, 2, 2)
    seen: list[tuple[int, np.ndarray]] = []
    run_batches(lambda x: x * 2.0, images, batch_size=3, sink=lambda s, p: seen.append((s, p)))
    assert [s for s, _ in seen] == [0, 3, 6]
    assert [p.shape[0] for _, p in seen] == [3, 3, 1]
    assert np.array_equal(np.concatenate([p for _, p in seen])[:, 0], images * 2.0)
    with pytest.raises(ConfigError, match="batch-size"):
        run_batches(lambda x: x, images, batch_size=0, sink=lambda s, p: None)
    with pytest.raises(ModelError, match="expected"):
        run_batches(lambda x: x[:, 0], images, batch_size=3, sink=lambda s, p: None)


def test_gpu_present_follows_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_present.cache_clear()
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(backends.shutil, "which", lambda name: None)
        monkeypatch.setattr(backends.ctypes.util, "find_library", lambda name: None)
        assert gpu_present() is False
        gpu_present.cache_clear()
        monkeypatch.setattr(backends.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
        assert gpu_present() is True
    finally:
        gpu_present.cache_clear()


def test_segment_and_embed_is_one_pass_of_both_outputs(tmp_path: Path) -> None:
    """ONNX (``embedding`` output) and PyTorch give the probabilities of ``__call__`` and the
    network's embedding of the same slices; :func:`embedding_call` finds them."""
    model, path = tiny_domain_model(tmp_path)
    onnx_backend = OnnxBackend(path.read_bytes(), device="cpu", threads=1, where=path)
    torch_backend = TorchBackend(model.module, device="cpu", threads=1)
    x = np.random.default_rng(2).standard_normal((3, 1, 16, 16)).astype(np.float32)
    with torch.inference_mode():
        expected_z = model.module.net.embed(torch.from_numpy(x), 0).numpy()
    for backend in (onnx_backend, torch_backend):
        call = embedding_call(backend)
        assert call is not None and backend.embeds
        probabilities, z = call(x)
        assert probabilities.dtype == z.dtype == np.float32
        np.testing.assert_allclose(probabilities, backend(x), atol=1e-5)
        assert z.shape == expected_z.shape == (3, expected_z.shape[1])
        np.testing.assert_allclose(z, expected_z, atol=1e-4, rtol=1e-4)


def _softmax_graph(tmp_path: Path, outputs: list[str]) -> Path:
    nodes = [helper.make_node("Softmax", ["image"], ["probabilities"], axis=1)]
    if len(outputs) > 1:
        nodes.append(helper.make_node("ReduceMax", ["image"], [outputs[1]], keepdims=0))
    values = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)]
    values += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs[1:]]
    graph = helper.make_graph(
        nodes,
        "softmax",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        values,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{len(outputs)}-{outputs[-1]}.onnx"
    onnx.save_model(model, path)
    return path


def test_single_output_graphs_have_no_embedding_and_others_are_refused(tmp_path: Path) -> None:
    """A probabilities-only graph (an int8 export, one exported before the embedding output)
    still predicts, without an embedding; a second output with another name is refused."""
    single = OnnxBackend(_softmax_graph(tmp_path, ["probabilities"]), device="cpu", threads=1)
    assert not single.embeds and embedding_call(single) is None
    with pytest.raises(ModelError, match="no embedding output"):
        single.segment_and_embed(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(ModelError, match="one input and one output"):
        OnnxBackend(_softmax_graph(tmp_path, ["probabilities", "logits"]), device="cpu", threads=1)
