"""Writing a model into a run folder: the weights, then the card that records their SHA-256."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from pedseg.io.atomic import atomic_path
from pedseg.runfolder.card import ModelCard, write_card
from pedseg.runfolder.checkpoint import state_tensors
from pedseg.runfolder.integrity import file_sha256
from pedseg.runfolder.layout import RunLayout

__all__ = ["save_model"]


def save_model(layout: RunLayout | Path, module: nn.Module, card: ModelCard) -> ModelCard:
    """Write ``module``'s weights and ``card`` (with their SHA-256) atomically; return the card.

    The weights go first: a reader never sees a card naming weights that are not in place. The
    profiles recorded by an earlier card belong to other weights and are forgotten.
    """
    layout = layout if isinstance(layout, RunLayout) else RunLayout(layout)
    with atomic_path(layout.weights) as tmp, torch.no_grad():
        save_file(state_tensors(module), str(tmp))
    written = replace(card, model_sha256=file_sha256(layout.weights))
    written = written.with_artifact(layout.relative(layout.profiles), None)
    write_card(layout, written)
    return written
