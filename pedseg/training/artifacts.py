"""The run folder: weights, ``model.json``, ``metrics.csv``, ``curves.png`` and the last-run pointer.

```
RUN/
  model.safetensors      weights of the best epoch (by mean validation Dice), no pickle
  model.json             architecture, scheme, domains (full descriptors + hashes, model order),
                         label mapping, training config (no case ids), pedseg version, model sha256
  metrics.csv            one row per epoch
  curves.png             losses and validation Dice per epoch
  checkpoints/latest/    resumable state (see pedseg.training.checkpoint)
  checkpoints/best/
```

The ``baseline`` scheme trains one model per domain: ``RUN/baseline/<domain>/`` is a complete run
folder as above (one domain each) and ``RUN/model.json`` (``"kind": "baseline"``) lists them under
``members``. ``model.json`` and the weights never hold case names or paths.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pedseg import __version__
from pedseg.domains.registry import pedseg_home
from pedseg.domains.spec import DomainSpec
from pedseg.errors import OutputExistsError, TrainingError
from pedseg.io.atomic import atomic_path, write_text_atomic
from pedseg.training.config import TrainConfig
from pedseg.training.prepare import LabelMapping

__all__ = [
    "MODEL_FORMAT",
    "check_run_dir",
    "file_sha256",
    "last_run",
    "model_card",
    "plot_curves",
    "set_last_run",
    "write_json",
    "write_metrics_csv",
]

MODEL_FORMAT = 1
LAST_RUN = "last_run"
_FIXED_COLUMNS = ("epoch", "step", "loss_ce", "loss_dice", "loss_contrastive", "loss_total")
_TAIL_COLUMNS = ("lr", "seconds", "slices_per_s")


def check_run_dir(out: Path, *, resume: bool, has_checkpoint: bool) -> None:
    """Refuse to start over a non-empty folder, or to resume without a checkpoint."""
    if resume:
        if not has_checkpoint:
            raise TrainingError(
                f"cannot resume {out}: it holds no checkpoint (checkpoints/latest); "
                "start a new run without --resume"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(
            out, "pass --resume to continue that run, or choose another output folder"
        )


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def model_card(
    *,
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    model_config: Mapping[str, Any],
    mappings: Sequence[LabelMapping],
    image_size: tuple[int, int],
    model_sha256: str,
    best_epoch: int,
    best_metric: float,
) -> dict[str, Any]:
    """The ``model.json`` of a single-model run (no case ids, no paths)."""
    heads: list[int] = []
    for mapping in mappings:
        if mapping.head == len(heads):
            heads.append(mapping.num_classes)
    return {
        "format": MODEL_FORMAT,
        "kind": "model",
        "pedseg_version": __version__,
        "scheme": config.scheme,
        "model": dict(model_config),
        "num_classes": heads,
        "image_size": list(image_size),
        "domains": [spec.name for spec in specs],
        "descriptors": {spec.name: spec.to_dict(include_data=False) for spec in specs},
        "descriptor_hashes": {spec.name: spec.content_hash() for spec in specs},
        "label_mapping": {m.domain: m.to_dict() for m in mappings},
        "training": config.to_dict(include_val_cases=False),
        "best_epoch": best_epoch,
        "best_metric": best_metric,
        "model_sha256": model_sha256,
    }


def baseline_card(
    *, config: TrainConfig, specs: Sequence[DomainSpec], members: Mapping[str, str]
) -> dict[str, Any]:
    """The top-level ``model.json`` of a baseline run: one member model per domain."""
    return {
        "format": MODEL_FORMAT,
        "kind": "baseline",
        "pedseg_version": __version__,
        "scheme": "baseline",
        "domains": [spec.name for spec in specs],
        "descriptor_hashes": {spec.name: spec.content_hash() for spec in specs},
        "members": dict(members),
        "training": config.to_dict(include_val_cases=False),
    }


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


def set_last_run(path: Path) -> None:
    """Record ``path`` as the most recent run (``pedseg_home()/last_run``)."""
    write_text_atomic(pedseg_home() / LAST_RUN, str(Path(path).resolve()) + "\n")


def last_run() -> Path | None:
    """The most recent run folder, if recorded and still there."""
    try:
        text = (pedseg_home() / LAST_RUN).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if not text:
        return None
    path = Path(text)
    return path if path.is_dir() else None
