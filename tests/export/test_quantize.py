"""The graph an int8 export quantises: untied constants, float nodes, attention-UNet graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from pedseg.export.int8_graph import untie_initializers
from pedseg.export.onnx import (
    export_run,
)
from pedseg.export.quantize import Int8Options
from pedseg.runfolder.loading import load_run
from tests.conftest_runs import tiny_run_dir

DOMAIN = "ankle"


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_shared_constants_are_untied_without_changing_the_graph() -> None:
    from onnx import TensorProto, helper

    weight = numpy_helper.from_array(np.ones((2, 1, 1, 1), dtype=np.float32), "w")
    bias = numpy_helper.from_array(np.array([0.5, -1.0], dtype=np.float32), "b")
    nodes = [
        helper.make_node("Identity", ["b"], ["b2"], name="tie"),
        helper.make_node("Conv", ["image", "w", "b"], ["h"], name="c1"),
        helper.make_node("Conv", ["h", "w2", "b2"], ["probabilities"], name="c2"),
    ]
    weight2 = numpy_helper.from_array(np.full((2, 2, 1, 1), 0.25, dtype=np.float32), "w2")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 2, 2, 2])],
        [weight, bias, weight2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)

    def run(m: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.asarray(session.run(None, {"image": x})[0])

    before = run(model)
    untie_initializers(model)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Conv"]
    biases = [n.input[2] for n in model.graph.node]
    assert len(set(biases)) == 2 and set(biases) <= set(_initializers(model))
    np.testing.assert_array_equal(run(model), before)


def test_float_nodes_are_the_first_level_and_the_tail(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from pedseg.export.int8_graph import float_nodes, int8_source

    run = load_run(tiny_run_dir(tmp_path_factory))
    model = run.domain("shoulder")
    export_run(run, domains=["shoulder"], out_dir=tmp_path)
    source = int8_source(
        model, tmp_path / "s.onnx", reference=(tmp_path / "shoulder.onnx").read_bytes()
    )
    graph = onnx.load_model(str(source))
    assert "ConvTranspose" not in {n.op_type for n in graph.graph.node}
    tail = ["/heads.1/Conv", "/Softmax"]
    assert sorted(float_nodes(graph, first_level=False)) == sorted(tail)
    first = ["/encoders.0/conv1/Conv", "/encoders.0/conv2/Conv"]
    assert sorted(float_nodes(graph, first_level=True)) == sorted(tail + first)


def test_attention_unet_quantises(tmp_path: Path) -> None:
    import torch

    from pedseg.domains.spec import DomainSpec
    from pedseg.export.int8_graph import int8_source
    from pedseg.export.onnx import export_domain
    from pedseg.export.quantize import quantize_graph
    from pedseg.models.build import ModelConfig, build_model
    from pedseg.models.segmenter import DomainSegmenter
    from pedseg.runfolder.loading import DomainModel

    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="attention-unet", base_width=4, depth=3), num_classes=[3])
    spec = DomainSpec(
        name="x", labels=((1, "a"), (2, "b")), normalization="zscore", image_size=(32, 32)
    )
    model = DomainModel(spec, (32, 32), DomainSegmenter(net.eval(), head=0), "0" * 64, "dsl", None)
    export_domain(model, tmp_path / "fp32.onnx")
    source = int8_source(
        model, tmp_path / "s.onnx", reference=(tmp_path / "fp32.onnx").read_bytes()
    )
    images = np.random.default_rng(0).standard_normal((8, 32, 32)).astype(np.float32)
    quantized = quantize_graph(source, tmp_path / "q.onnx", images, Int8Options())
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Sigmoid", "DepthToSpace"} <= ops
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(["probabilities"], {"image": images[:2, None]})
    reference = ort.InferenceSession(
        str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]
    )
    (expected,) = reference.run(["probabilities"], {"image": images[:2, None]})
    assert np.abs(out - expected).max() < 0.2  # an int8 approximation, not noise
