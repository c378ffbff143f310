"""Every registered architecture must train, round-trip through safetensors and export to ONNX."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

from pedseg.models.build import ARCHITECTURES, ModelConfig, build_model
from pedseg.models.unet import MultiDomainUNet

CLASSES = (3, 4)
CHUNKS = [(1, 2), (0, 2)]


def _model(arch: str, norm: str, seed: int) -> MultiDomainUNet:
    torch.manual_seed(seed)
    config = ModelConfig(arch=arch, base_width=4, depth=3, norm=norm)
    return build_model(config, num_classes=CLASSES)


def _trained_a_little(arch: str, norm: str) -> MultiDomainUNet:
    """Non-trivial running statistics, so that saving and exporting them is tested."""
    model = _model(arch, norm, seed=0).train()
    with torch.no_grad():
        model(torch.randn(4, 1, 16, 16) * 2 + 1, CHUNKS)
    return model.eval()


@pytest.fixture(params=sorted(ARCHITECTURES))
def arch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("norm", ["dsbn", "bn"])
def test_forward_backward(arch: str, norm: str) -> None:
    model = _model(arch, norm, seed=0).train()
    out = model(torch.randn(4, 1, 16, 16), CHUNKS)
    loss = sum(logits.square().mean() for logits in out.logits) + out.embedding.mean()
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("norm", ["dsbn", "bn"])
def test_safetensors_round_trip(arch: str, norm: str, tmp_path: Path) -> None:
    model = _trained_a_little(arch, norm)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    restored = _model(arch, norm, seed=1)
    restored.load_state_dict(load_file(str(path)), strict=True)
    restored.eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        expected = model(x, CHUNKS)
        got = restored(x, CHUNKS)
    for a, b in zip(got.logits, expected.logits, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(got.embedding, expected.embedding)


def test_onnx_export_parity(arch: str) -> None:
    model = _trained_a_little(arch, "dsbn")
    session = ort.InferenceSession(_export(model, domain=1), providers=["CPUExecutionProvider"])
    assert model.training is False  # export must not leave the model in training mode
    for shape in [(2, 1, 32, 32), (3, 1, 16, 32)]:
        x = torch.randn(*shape)
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = model.forward_domain(x, 1).numpy()
        assert got.shape == (shape[0], CLASSES[1], *shape[2:])
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def _export(model: MultiDomainUNet, *, domain: int) -> bytes:
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter announces itself
        torch.onnx.export(
            model.domain_view(domain),
            (torch.randn(2, 1, 32, 32),),
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": dynamic, "logits": dynamic},
        )
    return buffer.getvalue()
