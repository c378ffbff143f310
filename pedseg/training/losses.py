"""The paper's losses: multi-domain cross-entropy (Eq. 2) and supervised contrastive loss (Eq. 3).

The training objective is ``L = L_CE + lambda * L_Contrastive`` (paper: lambda = 0.1, tau = 0.1).
:func:`multi_domain_soft_dice` is not in the paper: it is the optional ``seg_loss="dice-ce"`` term
(``L = L_CE + L_Dice + lambda * L_Contrastive``), the usual remedy (nnU-Net's default) when thin or
small structures make up a tiny share of the pixels and cross-entropy alone learns them slowly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from pedseg.errors import ConfigError, TrainingError

__all__ = [
    "multi_domain_cross_entropy",
    "multi_domain_soft_dice",
    "supervised_contrastive_loss",
]

# Finite stand-in for -inf on the similarity diagonal: exp() of it is exactly 0 in float32, and
# unlike -inf it keeps rows without any other sample free of NaN in the forward and backward passes.
_MASKED = -1e9
# Smoothing of the soft Dice ratio: keeps a class that is absent from both prediction and target at
# Dice ~1 (no gradient push) and the ratio finite.
_DICE_SMOOTH = 1e-5


def _check_chunks(logits: Sequence[Tensor], targets: Sequence[Tensor]) -> None:
    """One integer target map ``(n, H, W)`` per logit chunk ``(n, C, H, W)``."""
    if len(logits) != len(targets):
        raise TrainingError(
            f"got {len(logits)} logit chunk(s) but {len(targets)} target chunk(s); "
            "pass one target per domain chunk"
        )
    for index, (chunk, target) in enumerate(zip(logits, targets, strict=True)):
        if chunk.ndim != 4 or target.shape != (chunk.shape[0], *chunk.shape[2:]):
            raise TrainingError(
                f"chunk {index}: targets of shape {tuple(target.shape)} do not match logits "
                f"{tuple(chunk.shape)}; expected logits (n, C, H, W) and targets (n, H, W)"
            )
        if target.is_floating_point() or target.is_complex():
            raise TrainingError(
                f"chunk {index}: targets must hold integer class indices, got {target.dtype}"
            )


def multi_domain_cross_entropy(logits: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Eq. 2: per-domain cross-entropy divided by the domain's class count, averaged over domains.

    ``L_CE = -1/K sum_k 1/(n_k |C_k|) sum_i sum_c y_ic^k log(softmax(logits)_ic^k)`` where the sum
    over ``i`` runs over the ``n_k`` samples *and* their pixels. Exactly, for each domain ``k``
    present:

    1. the per-pixel cross-entropy (summed over the one-hot classes, so ``-log p_true``), averaged
       over all ``n_k * H * W`` pixels of the domain's chunk;
    2. divided by ``|C_k|``, the number of classes of that domain, background included
       (``logits[k].shape[1]``);

    and the result is the mean of these terms over the ``K`` domains present (chunks with zero
    samples are skipped). Labels must be valid class indices; they are not range-checked here.

    Args:
        logits: per domain chunk, raw logits ``(n_k, C_k, H, W)``.
        targets: per domain chunk, integer class maps ``(n_k, H, W)``, values in ``[0, C_k)``.
    """
    _check_chunks(logits, targets)
    terms: list[Tensor] = []
    for chunk, target in zip(logits, targets, strict=True):
        if chunk.shape[0] == 0:
            continue
        num_classes = chunk.shape[1]
        terms.append(F.cross_entropy(chunk, target.long(), reduction="mean") / num_classes)
    if not terms:
        raise TrainingError("no domain chunk holds any sample; the batch is empty")
    return torch.stack(terms).mean()


def multi_domain_soft_dice(logits: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """``1 - soft Dice`` over each domain's foreground classes, averaged over the domains present.

    For each domain chunk ``k`` with ``n_k > 0`` samples and ``C_k`` classes, the softmax
    probabilities ``p`` and the one-hot targets ``y`` give, per foreground class ``c >= 1``, the
    batch Dice ``(2 sum p y + s) / (sum p + sum y + s)`` with sums over all samples and pixels of the
    chunk (a "batch Dice", as nnU-Net computes it for 2D training: a slice without the structure
    does not count as a failure on its own). The chunk's loss is ``1 -`` the mean over its
    foreground classes; the result is the mean over the domains present. A domain with only the
    background class contributes nothing.

    Args:
        logits: per domain chunk, raw logits ``(n_k, C_k, H, W)``.
        targets: per domain chunk, integer class maps ``(n_k, H, W)``, values in ``[0, C_k)``.
    """
    _check_chunks(logits, targets)
    terms: list[Tensor] = []
    for chunk, target in zip(logits, targets, strict=True):
        if chunk.shape[0] == 0 or chunk.shape[1] < 2:
            continue
        probs = torch.softmax(chunk.float(), dim=1)[:, 1:]
        onehot = F.one_hot(target.long(), chunk.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs)
        intersection = (probs * onehot).sum(dim=(0, 2, 3))
        total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
        dice = (2 * intersection + _DICE_SMOOTH) / (total + _DICE_SMOOTH)
        terms.append(1 - dice.mean())
    if not terms:
        reference = logits[0] if logits else None
        if reference is None:
            raise TrainingError("no domain chunk holds any sample; the batch is empty")
        return reference.float().sum() * 0
    return torch.stack(terms).mean()


def supervised_contrastive_loss(z: Tensor, domains: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Eq. 3: supervised contrastive loss on the embeddings, the domain index being the class.

    ``L = -1/|A| sum_{i in A} 1/|P(i)| sum_{p in P(i)} log(exp(s_ip / tau) / sum_{j != i} exp(s_ij /
    tau))`` with ``s`` the cosine similarity and ``P(i)`` the other samples of ``i``'s domain.

    Anchors without any positive (a domain with a single sample in the batch) have an undefined
    inner mean; they are excluded, so the outer mean runs over the set ``A`` of anchors that have at
    least one positive (with every domain present at least twice this is the paper's ``1/n``). Such
    samples still appear as negatives of the others. If no anchor has a positive, the result is 0,
    connected to the graph of ``z`` (backward works and gives zero gradients).

    ``z`` is meant to be the global-max-pooled bottleneck (``SegOutput.embedding``), which depends
    on the encoder only: this term therefore regularises only the encoder (shared convolutions and
    the encoder's norm layers), as the paper requires, and never reaches the decoder or the heads.

    The computation is vectorised, in float32 at least, and numerically stable (log-sum-exp with the
    diagonal masked).

    Args:
        z: embeddings ``(N, D)``.
        domains: domain index per sample ``(N,)``.
        temperature: ``tau`` > 0.
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    if z.ndim != 2 or domains.ndim != 1 or domains.shape[0] != z.shape[0]:
        raise TrainingError(
            f"expected embeddings (N, D) and domain indices (N,), got {tuple(z.shape)} and "
            f"{tuple(domains.shape)}"
        )
    dtype = torch.promote_types(z.dtype, torch.float32)
    unit = F.normalize(z.to(dtype), dim=1)
    similarity = unit @ unit.T / temperature
    n = z.shape[0]
    diagonal = torch.eye(n, dtype=torch.bool, device=z.device)
    similarity = similarity.masked_fill(diagonal, _MASKED)
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (domains[:, None] == domains[None, :]) & ~diagonal
    num_positives = positives.sum(dim=1)
    sum_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    per_anchor = sum_log_prob / num_positives.clamp(min=1)
    has_positive = (num_positives > 0).to(dtype)
    return -(per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1)
