"""Eq. 2 (multi-domain cross-entropy) and Eq. 3 (supervised contrastive) against the formulas."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pedseg.errors import ConfigError, TrainingError
from pedseg.models.unet import MultiDomainUNet
from pedseg.training.losses import (
    multi_domain_cross_entropy,
    multi_domain_soft_dice,
    supervised_contrastive_loss,
)
from pedseg.training.step import LossSpec, LossTerms, compute_losses

# ----------------------------------------------------------------------------- Eq. 2


def _eq2_by_loops(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    """-1/K sum_k 1/(n_k |C_k|) sum_i sum_c y log y_hat, the sum over i covering every pixel."""
    terms = []
    for chunk, target in zip(logits, targets, strict=True):
        n, classes, height, width = chunk.shape
        total = 0.0
        for i in range(n):
            for y in range(height):
                for x in range(width):
                    scores = [float(chunk[i, c, y, x]) for c in range(classes)]
                    log_norm = math.log(sum(math.exp(s) for s in scores))
                    for c in range(classes):
                        one_hot = 1.0 if int(target[i, y, x]) == c else 0.0
                        total += one_hot * (scores[c] - log_norm)
        terms.append(-total / (n * height * width * classes))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_entropy_matches_equation_2(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 3), (3, 5), (1, 2)]  # (n_k, |C_k|)
    logits = [torch.randn(n, c, 3, 4, generator=generator, dtype=torch.float64) for n, c in shapes]
    targets = [torch.randint(0, c, (n, 3, 4), generator=generator) for n, c in shapes]
    got = multi_domain_cross_entropy(logits, targets)
    assert got.shape == ()
    assert float(got) == pytest.approx(_eq2_by_loops(logits, targets), rel=1e-12)


def test_cross_entropy_known_value_and_empty_chunks() -> None:
    # Uniform logits: -log p = log |C| per pixel, so the term of domain k is log|C_k| / |C_k|.
    logits = [torch.zeros(2, 2, 4, 4), torch.zeros(3, 4, 4, 4), torch.zeros(0, 3, 4, 4)]
    targets = [
        torch.ones(2, 4, 4, dtype=torch.long),
        torch.zeros(3, 4, 4, dtype=torch.long),
        torch.zeros(0, 4, 4, dtype=torch.long),
    ]
    expected = (math.log(2) / 2 + math.log(4) / 4) / 2  # the empty domain is not "present"
    assert float(multi_domain_cross_entropy(logits, targets)) == pytest.approx(expected)


def test_cross_entropy_gradient_flows() -> None:
    logits = [torch.randn(2, 3, 4, 4, requires_grad=True)]
    multi_domain_cross_entropy(logits, [torch.randint(0, 3, (2, 4, 4))]).backward()
    assert logits[0].grad is not None and float(logits[0].grad.abs().sum()) > 0


def test_cross_entropy_errors() -> None:
    logits = [torch.zeros(2, 3, 4, 4)]
    with pytest.raises(TrainingError, match=r"1 logit chunk.*2 target chunk"):
        multi_domain_cross_entropy(logits, [torch.zeros(2, 4, 4), torch.zeros(2, 4, 4)])
    with pytest.raises(TrainingError, match=r"chunk 0: targets of shape \(2, 1, 4, 4\)"):
        multi_domain_cross_entropy(logits, [torch.zeros(2, 1, 4, 4, dtype=torch.long)])
    with pytest.raises(TrainingError, match="integer class indices"):
        multi_domain_cross_entropy(logits, [torch.zeros(2, 4, 4)])
    with pytest.raises(TrainingError, match="empty"):
        multi_domain_cross_entropy(
            [torch.zeros(0, 3, 4, 4)], [torch.zeros(0, 4, 4, dtype=torch.long)]
        )


# ----------------------------------------------------------------------------- Eq. 3


def _eq3_by_loops(z: torch.Tensor, domains: list[int], tau: float) -> float:
    """Eq. 3 transcribed; anchors with an empty P(i) are left out of the mean."""
    n = len(domains)

    def sim(i: int, j: int) -> float:
        return float(z[i] @ z[j]) / (float(z[i].norm()) * float(z[j].norm()))

    total, anchors = 0.0, 0
    for i in range(n):
        positives = [p for p in range(n) if domains[p] == domains[i] and p != i]
        if not positives:
            continue
        denominator = sum(math.exp(sim(i, j) / tau) for j in range(n) if j != i)
        inner = sum(math.log(math.exp(sim(i, p) / tau) / denominator) for p in positives)
        total += inner / len(positives)
        anchors += 1
    return -total / anchors


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_contrastive_matches_equation_3(seed: int, tau: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    domains = [0, 0, 1, 1, 1, 2, 0, 3, 3]  # domain 2 has one sample: an anchor without positives
    z = torch.randn(len(domains), 6, generator=generator, dtype=torch.float64)
    got = supervised_contrastive_loss(z, torch.tensor(domains), temperature=tau)
    assert float(got) == pytest.approx(_eq3_by_loops(z, domains, tau), rel=1e-10)


def test_contrastive_every_anchor_has_positives_is_the_papers_mean() -> None:
    domains = [1, 0, 1, 0, 2, 2]
    z = torch.randn(6, 4, dtype=torch.float64)
    got = supervised_contrastive_loss(z, torch.tensor(domains), temperature=0.1)
    assert float(got) == pytest.approx(_eq3_by_loops(z, domains, 0.1), rel=1e-10)


def test_contrastive_clustered_embeddings_score_lower() -> None:
    domains = torch.tensor([0, 0, 0, 1, 1, 1])
    clustered = torch.eye(2)[domains] + 0.01 * torch.randn(6, 2)
    mixed = torch.eye(2)[torch.tensor([0, 1, 0, 1, 0, 1])] + 0.01 * torch.randn(6, 2)
    assert supervised_contrastive_loss(clustered, domains) < supervised_contrastive_loss(
        mixed, domains
    )


def test_contrastive_without_positives_is_zero_with_a_graph() -> None:
    z = torch.randn(3, 5, requires_grad=True)
    loss = supervised_contrastive_loss(z, torch.tensor([0, 1, 2]))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None and torch.equal(z.grad, torch.zeros_like(z))
    single = torch.randn(1, 5, requires_grad=True)
    supervised_contrastive_loss(single, torch.tensor([0])).backward()
    assert single.grad is not None and torch.isfinite(single.grad).all()


def test_contrastive_is_numerically_stable() -> None:
    z = torch.randn(8, 16) * 1e6
    z[0] = 0.0  # an all-zero embedding (possible after ReLU + max pooling)
    z.requires_grad_(True)
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3])
    loss = supervised_contrastive_loss(z, domains, temperature=0.01)
    loss.backward()
    assert torch.isfinite(loss) and z.grad is not None and torch.isfinite(z.grad).all()
    # Half-precision embeddings (autocast) are computed in float32.
    half = supervised_contrastive_loss(torch.randn(8, 16).half(), domains, temperature=0.01)
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_contrastive_errors() -> None:
    with pytest.raises(ConfigError, match="temperature must be > 0, got 0"):
        supervised_contrastive_loss(torch.randn(2, 3), torch.tensor([0, 0]), temperature=0)
    with pytest.raises(TrainingError, match=r"\(N, D\) and domain indices \(N,\)"):
        supervised_contrastive_loss(torch.randn(2, 3), torch.tensor([0, 0, 1]))


def test_contrastive_gradients_reach_only_the_encoder() -> None:
    torch.manual_seed(0)
    model = MultiDomainUNet(num_classes=[3, 2], base_width=4, depth=3, attention=True).train()
    out = model(torch.randn(6, 1, 16, 16), [(0, 3), (1, 3)])
    supervised_contrastive_loss(out.embedding, torch.tensor([0, 0, 0, 1, 1, 1])).backward()
    encoder: list[tuple[str, torch.Tensor | None]] = []
    rest: list[tuple[str, torch.Tensor | None]] = []
    for name, parameter in model.named_parameters():
        (encoder if name.startswith("encoders.") else rest).append((name, parameter.grad))
    assert rest and all(grad is None for _, grad in rest), [n for n, g in rest if g is not None]
    assert all(grad is not None for _, grad in encoder)
    # Shared convolutions and the encoder's domain-specific norms both receive a signal.
    nonzero = {name for name, grad in encoder if grad is not None and grad.abs().sum() > 0}
    assert "encoders.0.conv1.weight" in nonzero
    assert "encoders.2.norm2.bns.1.weight" in nonzero


# ----------------------------------------------------------------------------- soft Dice (opt-in)


def _soft_dice_by_loops(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
    """1 - mean over foreground classes of the batch soft Dice, averaged over domains."""
    terms = []
    for chunk, target in zip(logits, targets, strict=True):
        probs = torch.softmax(chunk, dim=1)
        scores = []
        for c in range(1, chunk.shape[1]):
            inter = total = 0.0
            for i in range(chunk.shape[0]):
                for y in range(chunk.shape[2]):
                    for x in range(chunk.shape[3]):
                        p, t = float(probs[i, c, y, x]), float(int(target[i, y, x]) == c)
                        inter += p * t
                        total += p + t
            scores.append((2 * inter + 1e-5) / (total + 1e-5))
        terms.append(1 - sum(scores) / len(scores))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("seed", [0, 1])
def test_soft_dice_matches_its_formula(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(2, 3), (3, 5)]
    logits = [torch.randn(n, c, 3, 4, generator=generator, dtype=torch.float64) for n, c in shapes]
    targets = [torch.randint(0, c, (n, 3, 4), generator=generator) for n, c in shapes]
    got = float(multi_domain_soft_dice(logits, targets))
    assert got == pytest.approx(_soft_dice_by_loops(logits, targets), rel=1e-5)


def test_soft_dice_is_zero_for_a_perfect_prediction_and_one_for_a_disjoint_one() -> None:
    target = torch.tensor([[[0, 1], [2, 2]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).double() * 100
    assert float(multi_domain_soft_dice([perfect], [target])) == pytest.approx(0.0, abs=1e-6)
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).double() * 100
    assert float(multi_domain_soft_dice([wrong], [target])) == pytest.approx(1.0, abs=1e-5)
    # A structure absent from target and prediction scores Dice 1 (no push), not 0.
    background = torch.zeros(1, 2, 2, 2)
    background[:, 0] = 100.0
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    assert float(multi_domain_soft_dice([background], [empty])) == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_errors_and_gradients() -> None:
    with pytest.raises(TrainingError, match="1 logit chunk"):
        multi_domain_soft_dice([torch.randn(1, 2, 2, 2)], [])
    with pytest.raises(TrainingError, match="chunk 0: targets of shape"):
        multi_domain_soft_dice([torch.randn(1, 2, 2, 2)], [torch.zeros(1, 3, 2, dtype=torch.long)])
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    multi_domain_soft_dice([logits], [torch.randint(0, 3, (2, 4, 4))]).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("scheme", ["dsl", "dsl-contrastive"])
def test_compute_losses_adds_dice_only_when_asked(scheme: str) -> None:
    torch.manual_seed(0)
    model = MultiDomainUNet(num_classes=[3, 2], base_width=4, depth=3).train()
    images = torch.randn(6, 1, 16, 16)
    targets = torch.cat([torch.randint(0, 3, (3, 16, 16)), torch.randint(0, 2, (3, 16, 16))])
    chunks = [(0, 3), (1, 3)]
    spec = LossSpec(scheme=scheme, tau=0.1, lam=0.1)
    plain = LossTerms.named(compute_losses(model, images, targets, chunks, loss=spec).stacked())
    both = compute_losses(
        model, images, targets, chunks, loss=dataclasses.replace(spec, seg_loss="dice-ce")
    )
    terms = LossTerms.named(both.stacked())
    assert plain["dice"] == 0.0 and terms["dice"] > 0.0
    assert terms["ce"] == pytest.approx(plain["ce"])
    expected = terms["ce"] + terms["dice"] + 0.1 * terms["contrastive"]
    assert terms["total"] == pytest.approx(expected, rel=1e-6)
    assert (terms["contrastive"] > 0) == (scheme == "dsl-contrastive")
