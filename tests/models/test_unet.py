"""The multi-domain UNet: shapes, options, domain routing, DSBN isolation, memory formats."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from pedseg.errors import ConfigError, ModelError
from pedseg.models.dsbn import DomainBatchNorm2d, NormKind, SharedBatchNorm2d
from pedseg.models.unet import MultiDomainUNet


def _tiny(
    *, attention: bool = False, norm: NormKind = "dsbn", classes: tuple[int, ...] = (3, 2)
) -> MultiDomainUNet:
    torch.manual_seed(0)
    return MultiDomainUNet(
        num_classes=classes, base_width=4, depth=3, attention=attention, norm=norm
    )


def _domain_state(model: MultiDomainUNet, domain: int) -> dict[str, Tensor]:
    """Every tensor that belongs to ``domain`` only: its BN sets and its head."""
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, DomainBatchNorm2d):
            for key, tensor in module.bns[domain].state_dict().items():
                state[f"{name}.bns.{domain}.{key}"] = tensor.detach().clone()
    for key, tensor in model.heads.heads[domain].state_dict().items():
        state[f"heads.{domain}.{key}"] = tensor.detach().clone()
    return state


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("norm", ["dsbn", "bn"])
def test_output_shapes(attention: bool, norm: NormKind) -> None:
    model = _tiny(attention=attention, norm=norm)
    out = model(torch.randn(5, 1, 16, 16), [(1, 2), (0, 3)])
    assert [tuple(t.shape) for t in out.logits] == [(2, 2, 16, 16), (3, 3, 16, 16)]
    assert out.embedding.shape == (5, 16) == (5, model.embedding_dim)
    assert model.num_domains == 2 and model.num_classes == (3, 2)
    norm_type = DomainBatchNorm2d if norm == "dsbn" else SharedBatchNorm2d
    norms = [m for m in model.modules() if isinstance(m, DomainBatchNorm2d | SharedBatchNorm2d)]
    assert norms and all(isinstance(m, norm_type) for m in norms)
    gates = [name for name, _ in model.named_modules() if name.endswith(".gate")]
    assert len(gates) == (2 if attention else 0)


def test_depth_and_width_options() -> None:
    model = MultiDomainUNet(num_classes=[2], in_channels=2, base_width=2, depth=4)
    assert model.widths == (2, 4, 8, 16)
    assert model.size_multiple == 8
    assert len(model.encoders) == 4 and len(model.decoders) == 3
    out = model(torch.randn(2, 2, 24, 16), [(0, 2)])
    assert out.logits[0].shape == (2, 2, 24, 16)
    assert out.embedding.shape == (2, 16)


def test_default_widths() -> None:
    with torch.device("meta"):
        model = MultiDomainUNet(num_classes=[4])
    assert model.widths == (32, 64, 128, 256, 512)
    assert model.embedding_dim == 512


def test_input_size_must_be_divisible() -> None:
    model = _tiny()
    with pytest.raises(ConfigError, match=r"divisible by 2\*\*\(depth-1\) = 4 .*got 18x16"):
        model(torch.randn(1, 1, 18, 16), [(0, 1)])
    with pytest.raises(ConfigError, match="divisible"):
        model.forward_domain(torch.randn(1, 1, 16, 10), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_width": 0}, "base_width must be an integer >= 1, got 0"),
        ({"depth": 1}, "depth must be an integer >= 2, got 1"),
        ({"in_channels": 0}, "in_channels must be an integer >= 1"),
        ({"norm": "gn"}, "norm must be 'dsbn' or 'bn'"),
        ({"num_classes": [3, 1]}, r"num_classes\[1\]"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"num_classes": [3]} | kwargs
    with pytest.raises(ConfigError, match=message):
        MultiDomainUNet(**arguments)  # type: ignore[arg-type]


def test_bad_inputs_raise_model_error() -> None:
    model = _tiny()
    with pytest.raises(ModelError, match=r"shape \(N, 1, H, W\)"):
        model(torch.randn(1, 3, 16, 16), [(0, 1)])
    with pytest.raises(ModelError, match="add up to 3"):
        model(torch.randn(2, 1, 16, 16), [(0, 3)])
    with pytest.raises(ModelError, match=r"domain index must be in \[0, 2\), got 5"):
        model.forward_domain(torch.randn(1, 1, 16, 16), 5)


@pytest.mark.parametrize("attention", [False, True])
def test_mixed_batch_equals_each_chunk_alone_in_train_mode(attention: bool) -> None:
    mixed = _tiny(attention=attention).train()
    alone = copy.deepcopy(mixed)
    x = torch.randn(5, 1, 16, 16)
    out = mixed(x, [(1, 2), (0, 3)])
    first = alone(x[:2], [(1, 2)])
    second = alone(x[2:], [(0, 3)])
    torch.testing.assert_close(out.logits[0], first.logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits[1], second.logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.embedding, torch.cat([first.embedding, second.embedding]), atol=1e-5, rtol=1e-5
    )
    # Same running statistics afterwards.
    for (name, a), (_, b) in zip(mixed.named_buffers(), alone.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=name)


def test_training_on_one_domain_leaves_the_other_untouched() -> None:
    model = _tiny(attention=True).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    before_b = _domain_state(model, 1)
    before_a = _domain_state(model, 0)
    for _ in range(2):
        out = model(torch.randn(3, 1, 16, 16) * 3 + 1, [(0, 3)])
        loss = out.logits[0].square().mean() + out.embedding.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after_b = _domain_state(model, 1)
    assert before_b.keys() == after_b.keys() and len(before_b) > 10
    for key, tensor in before_b.items():
        assert torch.equal(tensor, after_b[key]), key
    after_a = _domain_state(model, 0)
    changed = [key for key, tensor in before_a.items() if not torch.equal(tensor, after_a[key])]
    assert any("running_mean" in key for key in changed)
    assert any(key.endswith("weight") and "bns" in key for key in changed)
    assert "heads.0.weight" in changed


@pytest.mark.parametrize("attention", [False, True])
def test_forward_domain_equals_chunked_forward_in_eval_mode(attention: bool) -> None:
    model = _tiny(attention=attention).train()
    with torch.no_grad():  # give each domain distinct running statistics
        model(torch.randn(4, 1, 16, 16) * 2 + 3, [(0, 2), (1, 2)])
    model.eval()
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        out = model(x, [(1, 2), (0, 3)])
        torch.testing.assert_close(model.forward_domain(x[:2], 1), out.logits[0])
        torch.testing.assert_close(model.forward_domain(x[2:], 0), out.logits[1])
        torch.testing.assert_close(model.domain_view(0)(x[2:]), out.logits[1])
        assert not torch.allclose(model.forward_domain(x[:2], 0)[:, :2], out.logits[0])


def test_embedding_is_global_max_of_bottleneck() -> None:
    model = _tiny().eval()
    x = torch.randn(3, 1, 16, 16)
    skips, bottleneck = model.encode(x, [(0, 3)])
    assert [tuple(s.shape[1:]) for s in skips] == [(4, 16, 16), (8, 8, 8)]
    assert bottleneck.shape == (3, 16, 4, 4)
    expected = bottleneck.flatten(2).max(dim=2).values
    torch.testing.assert_close(model(x, [(0, 3)]).embedding, expected)
    torch.testing.assert_close(model.embed(x, 0), expected)


@pytest.mark.parametrize("attention", [False, True])
def test_channels_last_gives_the_same_result(attention: bool) -> None:
    model = _tiny(attention=attention).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        reference = model(x, [(0, 1), (1, 3)])
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last), [(0, 1), (1, 3)])
    for a, b in zip(out.logits, reference.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.embedding, reference.embedding, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["dsbn", "bn"])
def test_add_domain(norm: NormKind) -> None:
    model = _tiny(norm=norm)
    before = sum(p.numel() for p in model.parameters())
    assert model.add_domain(5) == 2
    assert model.num_domains == 2 + 1 and model.num_classes == (3, 2, 5)
    out = model(torch.randn(3, 1, 16, 16), [(2, 2), (0, 1)])
    assert out.logits[0].shape == (2, 5, 16, 16)
    added = sum(p.numel() for p in model.parameters()) - before
    head = 4 * 5 + 5
    # Norm channels: encoder 2 x (4 + 8 + 16), decoder 2 x (8 + 4); weight and bias each.
    bn_params = 2 * (2 * (4 + 8 + 16) + 2 * (8 + 4))
    assert added == head + (bn_params if norm == "dsbn" else 0)
    with pytest.raises(ConfigError, match="init must be"):
        model.add_domain(3, init="zeros")  # type: ignore[arg-type]


def test_add_domain_starts_from_the_mean_of_existing_domains() -> None:
    model = _tiny().eval()
    norm = model.encoders[0].norm1
    assert isinstance(norm, DomainBatchNorm2d)
    with torch.no_grad():
        norm.bns[0].weight.fill_(1.0)
        norm.bns[1].weight.fill_(3.0)
    model.add_domain(2)
    bn = norm.bns[2]
    assert isinstance(bn, nn.BatchNorm2d)
    torch.testing.assert_close(bn.weight.detach(), torch.full((4,), 2.0))
    assert not any(m.training for m in model.modules())  # follows the model's mode
