"""Validation: Dice per domain and label on the held-out cases, in 3D.

Each validation case's cached slices (the network's in-plane grid) are segmented, and Dice is
computed over all slices of the case at once (a 3D Dice), then averaged over the domain's validation
cases. A label absent from both the prediction and the reference of a case scores 1. Summary keys:
``val_dice/<domain>/<label>``, ``val_dice/<domain>`` (mean over its labels) and ``val_dice`` (mean
over domains): the model selection criterion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pedseg.runtime import autocast
from pedseg.training.prepare import DomainData

__all__ = ["dice_per_label", "validate"]


def dice_per_label(
    prediction: np.ndarray, reference: np.ndarray, labels: Sequence[int]
) -> list[float]:
    """Dice of each label id between two label maps of the same shape (1.0 if both are empty)."""
    scores: list[float] = []
    for label in labels:
        pred = prediction == label
        ref = reference == label
        denominator = int(pred.sum()) + int(ref.sum())
        overlap = int(np.logical_and(pred, ref).sum())
        scores.append(1.0 if denominator == 0 else 2.0 * overlap / denominator)
    return scores


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    images: np.ndarray,
    *,
    route: int,
    device: torch.device,
    batch_size: int,
    channels_last: bool,
    amp: torch.dtype | None,
) -> np.ndarray:
    """Class index per pixel (S, H, W) of the head ``route`` for slices (S, H, W)."""
    out: list[np.ndarray] = []
    for start in range(0, images.shape[0], batch_size):
        block = torch.from_numpy(np.array(images[start : start + batch_size], dtype=np.float32))
        x = block[:, None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model.forward_domain(x, route)  # type: ignore[operator]
        out.append(logits.float().argmax(dim=1).to("cpu").numpy())
    return np.concatenate(out)


def validate(
    model: nn.Module,
    domains: Sequence[DomainData],
    *,
    device: torch.device,
    batch_size: int,
    channels_last: bool = False,
    amp: torch.dtype | None = None,
) -> dict[str, float]:
    """Validation Dice of an unwrapped model (eval mode is set and the previous mode restored)."""
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    try:
        domain_means: list[float] = []
        for data in domains:
            lut = data.mapping.prediction_lut()
            labels = data.spec.label_ids
            per_case: list[list[float]] = []
            by_id = {case.case_id: case for case in data.cache.cases}
            for case_id in data.val_cases:
                case = by_id[case_id]
                classes = predict_slices(
                    model,
                    data.cache.images[case.start : case.stop],
                    route=data.mapping.head,
                    device=device,
                    batch_size=batch_size,
                    channels_last=channels_last,
                    amp=amp,
                )
                reference = np.asarray(data.cache.labels[case.start : case.stop])
                per_case.append(dice_per_label(lut[classes], reference, labels))
            means = np.mean(np.asarray(per_case, dtype=np.float64), axis=0)
            for name, value in zip(data.spec.label_names, means, strict=True):
                metrics[f"val_dice/{data.spec.name}/{name}"] = float(value)
            metrics[f"val_dice/{data.spec.name}"] = float(means.mean())
            domain_means.append(float(means.mean()))
        metrics["val_dice"] = float(np.mean(domain_means))
    finally:
        model.train(was_training)
    return metrics
