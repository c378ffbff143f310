"""Figures: prediction overlays (paper Fig. 3), per-case Dice boxplots, t-SNE panels (Fig. 4).

Everything draws on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no display) and
is saved atomically as PNG. Slices are shown as stored on the canonical RAS+ grid, rotated 90° so
that the second in-plane axis points up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError
from pedseg.io.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pedseg.evaluation.compare import MethodResults

__all__ = [
    "LABEL_COLORS",
    "EmbeddingPanel",
    "OverlayRow",
    "dice_boxplot",
    "overlay_figure",
    "overlay_grid",
    "overlay_rows",
    "save_figure",
    "tsne_figure",
]

logger = logging.getLogger(__name__)
LABEL_COLORS = ("lime", "dodgerblue", "yellow", "magenta", "cyan", "orange", "white", "pink")
"""Prediction colours by label position (the paper: green, blue, yellow, magenta, cyan)."""
REFERENCE_COLOR = "red"
DOMAIN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _new_figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def save_figure(figure: Figure, path: Path, *, overwrite: bool = True) -> Path:
    """Save ``figure`` as a PNG at ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


# ---------------------------------------------------------------------- overlays
@dataclass(frozen=True, eq=False)
class OverlayRow:
    """One case's slice: the image, the reference label map and each method's label map (2D)."""

    title: str
    image: np.ndarray
    reference: np.ndarray
    predictions: Mapping[str, np.ndarray] = field(default_factory=dict)
    aspect: float = 1.0


def _check_slice(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.ndim != 2 or (shape and array.shape != shape):
        raise ConfigError(
            f"overlay {name} must be a 2D slice of shape {shape or '(H, W)'}, got {array.shape}"
        )


def overlay_grid(
    rows: Sequence[OverlayRow],
    label_names: Mapping[int, str],
    path: Path,
    *,
    title: str | None = None,
) -> Path:
    """A row per case, a column per method: reference contours red, predictions filled per label."""
    if not rows:
        raise ConfigError("overlay_grid needs at least one row")
    methods = list(dict.fromkeys(m for row in rows for m in row.predictions)) or ["reference"]
    ids = sorted(label_names)
    colors = {label: LABEL_COLORS[i % len(LABEL_COLORS)] for i, label in enumerate(ids)}
    figure = _new_figure(2.6 * len(methods) + 0.4, 2.6 * len(rows) + 0.9)
    axes = np.atleast_2d(figure.subplots(len(rows), len(methods), squeeze=False))
    for r, row in enumerate(rows):
        _check_slice("image", row.image, ())
        _check_slice("reference", row.reference, row.image.shape)
        for c, method in enumerate(methods):
            ax = axes[r, c]
            ax.imshow(np.rot90(row.image), cmap="gray", aspect=row.aspect, interpolation="nearest")
            prediction = row.predictions.get(method)
            if prediction is not None:
                _check_slice(f"prediction of {method}", prediction, row.image.shape)
                _draw_labels(ax, np.rot90(prediction), colors, row.aspect)
            _draw_contours(ax, np.rot90(row.reference), ids, REFERENCE_COLOR)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(method, fontsize=9)
            if c == 0:
                ax.set_ylabel(row.title, fontsize=9)
    _legend(figure, label_names, colors)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.06, 1, 0.95 if title else 1))
    return save_figure(figure, path)


def overlay_figure(
    image_slice: np.ndarray,
    reference_slice: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    label_names: Mapping[int, str],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """One case: a column per method (see :func:`overlay_grid`)."""
    row = OverlayRow(title, image_slice, reference_slice, dict(predictions))
    return overlay_grid([row], label_names, path)


def _draw_labels(ax: object, labels: np.ndarray, colors: Mapping[int, str], aspect: float) -> None:
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    for label, color in colors.items():
        rgba[labels == label] = to_rgba(color, alpha=0.45)
    ax.imshow(rgba, aspect=aspect, interpolation="nearest")  # type: ignore[attr-defined]
    _draw_contours(ax, labels, list(colors), None, colors)


def _draw_contours(
    ax: object,
    labels: np.ndarray,
    ids: Sequence[int],
    color: str | None,
    colors: Mapping[int, str] | None = None,
) -> None:
    for label in ids:
        mask = (labels == label).astype(np.float32)
        if mask.any() and not mask.all():
            edge = color or (colors or {}).get(label, "white")
            ax.contour(mask, levels=[0.5], colors=[edge], linewidths=1.0)  # type: ignore[attr-defined]


def _legend(figure: Figure, label_names: Mapping[int, str], colors: Mapping[int, str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[object] = [Line2D([0], [0], color=REFERENCE_COLOR, label="reference")]
    handles += [Patch(color=colors[i], label=label_names[i]) for i in sorted(label_names)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)


def _largest_slice(reference: np.ndarray, axis: int) -> int:
    others = tuple(i for i in range(reference.ndim) if i != axis)
    area = np.count_nonzero(reference, axis=others)
    return int(np.argmax(area)) if area.any() else reference.shape[axis] // 2


def overlay_rows(
    methods: Sequence[MethodResults], spec: DomainSpec, *, max_cases: int = 3
) -> list[OverlayRow]:
    """Rows for ``spec``'s domain: cases predicted by every method that has predictions for it
    (``<method>/predictions/<domain>/<case>.nii.gz``, or for a ``pedseg evaluate`` output folder
    ``PRED/evaluation`` the files of ``PRED``), with the image and reference from the
    domain's data; the slice with the largest reference area along the domain's slice axis."""
    from pedseg.data.dataset import list_cases
    from pedseg.data.preprocess import resolve_slice_axis
    from pedseg.io import read_label, read_volume

    found = {m.name: _prediction_dir(m.path, spec.name) for m in methods}
    folders = {name: f for name, f in found.items() if f is not None}
    if not folders:
        return []
    cases = {c.case_id: c for c in list_cases(spec)}
    predicted = [_prediction_files(f) for f in folders.values()]
    common = sorted(set(cases).intersection(*(set(p) for p in predicted)))
    rows: list[OverlayRow] = []
    for case_id in common[:max_cases]:
        case = cases[case_id]
        if case.label is None:
            continue
        image = read_volume(case.image)
        reference = read_label(case.label).array
        axis = resolve_slice_axis(spec, image)
        index = _largest_slice(reference, axis)
        plane = [s for i, s in enumerate(image.spacing) if i != axis]
        predictions = {}
        for name, files in zip(folders, predicted, strict=True):
            array = read_label(files[case_id]).array
            if array.shape != reference.shape:
                logger.warning(
                    "%s: shape %s differs from the reference", files[case_id], array.shape
                )
                continue
            predictions[name] = np.take(array, index, axis=axis)
        rows.append(
            OverlayRow(
                title=f"{spec.name} {case_id} (slice {index})",
                image=np.take(image.array, index, axis=axis),
                reference=np.take(reference, index, axis=axis),
                predictions=predictions,
                aspect=float(plane[1] / plane[0]),
            )
        )
    return rows


def _prediction_dir(method: Path, domain: str) -> Path | None:
    folder = method / "predictions" / domain
    if folder.is_dir():
        return folder
    return method.parent if method.name == "evaluation" else None


def _prediction_files(folder: Path) -> dict[str, Path]:
    from pedseg.data.dataset import split_suffix

    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        parts = split_suffix(path.name)
        if parts is not None and not path.name.startswith("."):
            out[parts[0]] = path
    return out


# ---------------------------------------------------------------------- boxplot
def dice_boxplot(methods: Sequence[MethodResults], path: Path) -> Path:
    """Per-case Dice (%, label-averaged) per domain (a panel each) and method (a box each)."""
    domains = list(dict.fromkeys(d for m in methods for d in m.domains))
    if not domains:
        raise ConfigError("dice_boxplot needs at least one method with cases")
    width = max(4.0, 0.9 * len(methods) + 1.5)
    figure = _new_figure(width * len(domains), 4.2)
    axes = np.atleast_1d(figure.subplots(1, len(domains), squeeze=False)[0])
    for ax, domain in zip(axes, domains, strict=True):
        names = [m.name for m in methods if domain in m.domains]
        data = [
            [100.0 * v for v in m.case_values("dice", domain).values()]
            for m in methods
            if domain in m.domains
        ]
        ax.boxplot(data, showmeans=True)
        for i, values in enumerate(data, start=1):
            jitter = np.linspace(-0.08, 0.08, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(np.add(i, jitter), values, s=10, alpha=0.6, color="k", zorder=3)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
        ax.set(title=domain, ylabel="Dice per case (%)")
        ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


# ---------------------------------------------------------------------- t-SNE
@dataclass(frozen=True, eq=False)
class EmbeddingPanel:
    """2D points (``coords`` (n, 2)) with each point's domain and validation flag."""

    title: str
    coords: np.ndarray
    domains: np.ndarray
    validation: np.ndarray


def tsne_figure(panels: Sequence[EmbeddingPanel], path: Path, *, columns: int = 3) -> Path:
    """A panel per embedding: colour = domain, filled = training slice, hollow = validation."""
    if not panels:
        raise ConfigError("tsne_figure needs at least one panel")
    domains = list(dict.fromkeys(str(d) for p in panels for d in p.domains))
    colors = {d: DOMAIN_COLORS[i % len(DOMAIN_COLORS)] for i, d in enumerate(domains)}
    ncols = min(columns, len(panels))
    nrows = -(-len(panels) // ncols)
    figure = _new_figure(4.6 * ncols, 4.4 * nrows + 0.5)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        for domain in domains:
            keep = panel.domains == domain
            for val in (False, True):
                sel = keep & (panel.validation == val)
                if sel.any():
                    ax.scatter(
                        panel.coords[sel, 0],
                        panel.coords[sel, 1],
                        s=18,
                        linewidths=1.0,
                        facecolors="none" if val else colors[domain],
                        edgecolors=colors[domain],
                        alpha=0.9 if val else 0.6,
                    )
        ax.set(title=panel.title, xticks=[], yticks=[])
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    _tsne_legend(figure, colors)
    figure.tight_layout(rect=(0, 0.08 / nrows, 1, 1))
    return save_figure(figure, path)


def _tsne_legend(figure: Figure, colors: Mapping[str, str]) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([0], [0], marker="o", ls="", color=c, markerfacecolor=c, label=d)
        for d, c in colors.items()
    ]
    handles += [
        Line2D([0], [0], marker="o", ls="", color="gray", markerfacecolor="gray", label="training"),
        Line2D(
            [0], [0], marker="o", ls="", color="gray", markerfacecolor="none", label="validation"
        ),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9)
