"""The run's history on disk: ``metrics.csv`` (one row per epoch) and ``curves.png``."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pedseg.io.atomic import atomic_path, write_text_atomic

__all__ = ["metric_columns", "plot_curves", "write_metrics_csv"]

_FIXED_COLUMNS = ("epoch", "step", "loss_ce", "loss_dice", "loss_contrastive", "loss_total")
_TAIL_COLUMNS = ("lr", "seconds", "slices_per_s")


def metric_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column order: fixed loss columns, validation columns (first-seen order), lr/timing."""
    middle: list[str] = []
    for row in rows:
        for key in row:
            if key not in _FIXED_COLUMNS and key not in _TAIL_COLUMNS and key not in middle:
                middle.append(key)
    return [*_FIXED_COLUMNS, *middle, *_TAIL_COLUMNS]


def write_metrics_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = metric_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key, "")) for key in columns})
    write_text_atomic(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    return repr(value) if isinstance(value, float) else value


def plot_curves(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Losses (left) and mean validation Dice per domain (right) against the epoch."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [int(r["epoch"]) for r in rows]
    figure = Figure(figsize=(10, 4), dpi=100)
    left, right = figure.subplots(1, 2)
    for key, label in (
        ("loss_total", "total"),
        ("loss_ce", "CE"),
        ("loss_dice", "Dice"),
        ("loss_contrastive", "SupCon"),
    ):
        values = [float(r[key]) for r in rows if key in r]
        if len(values) == len(epochs) and any(v != 0.0 for v in values):
            left.plot(epochs, values, marker="o", label=label)
    left.set(xlabel="epoch", ylabel="training loss", title="Losses")
    left.legend()
    dice_keys = [k for k in rows[-1] if k.startswith("val_dice") and k.count("/") <= 1]
    for key in dice_keys:
        values = [float(r.get(key, float("nan"))) for r in rows]
        right.plot(epochs, values, marker="o", label=key.split("/", 1)[1] if "/" in key else "mean")
    right.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0.0, 1.0))
    right.legend()
    for axes in (left, right):
        axes.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
