"""Per-case evaluation of predicted label maps against reference label maps (``pedseg evaluate``).

Files are matched by *case name*: the file name without ``.nii.gz``/``.nii``/``.mha``/``.nrrd`` and
without an nnU-Net channel suffix ``_0000``. Nothing is dropped silently:

* a reference without a prediction is a *missed case*: it is scored as an empty prediction (Dice 0,
  distances = the image diagonal, see :mod:`pedseg.evaluation.metrics`) and listed as missing;
* a prediction without a reference cannot be scored and is listed as ignored.

Both maps are read in canonical RAS+ orientation (:func:`pedseg.io.read_label`) and must lie on the
same grid (:func:`pedseg.io.check_pair`); metrics use the canonical spacing. Slice-wise Dice (the
samples of the paper's KS tests) is taken along the domain's slice axis.

Outputs of :func:`write_evaluation` (in ``OUT``):

* ``metrics.csv`` -- one row per case and label (:data:`METRIC_COLUMNS`);
* ``slice_dice.csv`` -- one row per case, label and slice holding that label in the reference or
  the prediction (:data:`SLICE_COLUMNS`);
* ``summary.json`` -- mean/std/median/n/n_empty_reference/n_empty_prediction of every metric per
  label and over all label-cases, the domain, its descriptor hash, missing and ignored files.
  Non-finite values (the RAVD of a hallucinated structure) are written as the string ``"inf"``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pedseg.data.dataset import split_suffix
from pedseg.data.preprocess import resolve_slice_axis
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DatasetError, OutputExistsError, VolumeError
from pedseg.evaluation.metrics import METRIC_NAMES, LabelMetrics, Summary, case_metrics
from pedseg.evaluation.metrics import summarize_metric as _summarize_metric
from pedseg.io import check_pair, read_label
from pedseg.io.atomic import write_text_atomic
from pedseg.io.volume import Volume

__all__ = [
    "METRIC_COLUMNS",
    "SLICE_COLUMNS",
    "CaseResult",
    "Evaluation",
    "Matching",
    "case_key",
    "dump_json",
    "evaluate_case",
    "evaluate_folders",
    "evaluate_labels",
    "match_files",
    "metric_rows",
    "slice_rows",
    "summarize_cases",
    "volume_files",
    "write_csv",
    "write_evaluation",
]

METRIC_COLUMNS: tuple[str, ...] = (
    "case",
    "label",
    "label_name",
    *METRIC_NAMES,
    "empty_reference",
    "empty_prediction",
)
SLICE_COLUMNS: tuple[str, ...] = ("case", "label", "slice", "dice")
_CHANNEL = re.compile(r"_0000$")

Progress = Callable[[str, int, int], None]
"""``progress(case, done, total)`` after each evaluated case."""


@dataclass(frozen=True)
class CaseResult:
    """One case's metrics (one :class:`LabelMetrics` per label of the domain, in label order)."""

    case: str
    reference: Path | None
    prediction: Path | None  # None: no prediction file, scored as an empty prediction
    metrics: tuple[LabelMetrics, ...]
    slice_dice: tuple[tuple[int, int, float], ...]  # (label id, slice index, Dice)
    axis: int
    missing: bool = False


@dataclass(frozen=True)
class Matching:
    """Reference files paired with prediction files (``None`` = missing) and unmatched predictions."""

    pairs: tuple[tuple[str, Path | None, Path], ...]  # (case, prediction, reference)
    ignored: tuple[Path, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(case for case, pred, _ in self.pairs if pred is None)


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate_folders`."""

    spec: DomainSpec
    cases: tuple[CaseResult, ...]
    ignored: tuple[Path, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c.case for c in self.cases if c.missing)

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` payload."""
        out = summarize_cases(self.cases, self.spec)
        out["missing_predictions"] = list(self.missing)
        out["ignored_predictions"] = [str(p) for p in self.ignored]
        return out


# ------------------------------------------------------------------------------- file matching


def case_key(name: str) -> str | None:
    """The case name of a volume file name (``None`` for other files): ``ab_0000.nii.gz`` -> ``ab``."""
    if name.startswith("."):
        return None
    parts = split_suffix(name)
    if parts is None:
        return None
    return _CHANNEL.sub("", parts[0]) or parts[0]


def volume_files(path: Path, *, role: str) -> dict[str, Path]:
    """Case name -> file of a folder (not recursive) or of a single file."""
    path = Path(path).expanduser()
    if path.is_file():
        key = case_key(path.name)
        if key is None:
            raise VolumeError(
                path, f"is not a label map file ({role}); use .nii.gz, .nii, .mha or .nrrd"
            )
        return {key: path}
    if not path.is_dir():
        raise DatasetError(f"{role} {path} does not exist; give a folder or a label map file")
    out: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        key = case_key(file.name)
        if key is None or not file.is_file():
            continue
        if key in out:
            raise DatasetError(
                f"{role} folder {path}: {out[key].name} and {file.name} both give case {key!r}; "
                "keep one of them"
            )
        out[key] = file
    return out


def match_files(prediction: Path, reference: Path) -> Matching:
    """Pair the files of ``prediction`` and ``reference`` (folders or single files) by case name.

    Two single files are paired whatever their names (the case is the reference's name).
    """
    preds = volume_files(prediction, role="prediction")
    refs = volume_files(reference, role="reference")
    if not refs:
        raise DatasetError(
            f"no reference label maps in {reference} (looked for .nii.gz, .nii, .mha, .nrrd)"
        )
    if Path(prediction).is_file() and Path(reference).is_file():
        (case, ref_path), pred_path = next(iter(refs.items())), next(iter(preds.values()))
        return Matching(pairs=((case, pred_path, ref_path),), ignored=())
    pairs = tuple((case, preds.get(case), refs[case]) for case in sorted(refs))
    ignored = tuple(preds[case] for case in sorted(set(preds) - set(refs)))
    return Matching(pairs=pairs, ignored=ignored)


# ------------------------------------------------------------------------------------ metrics


def _slice_samples(
    pred: np.ndarray, ref: np.ndarray, *, axis: int, label_ids: Sequence[int]
) -> tuple[tuple[int, int, float], ...]:
    """Like :func:`pedseg.evaluation.metrics.slice_dice`, with the label and slice of each value."""
    others = tuple(i for i in range(pred.ndim) if i != axis)
    out: list[tuple[int, int, float]] = []
    for label in label_ids:
        p, r = pred == label, ref == label
        tp = np.count_nonzero(p & r, axis=others)
        total = np.count_nonzero(p, axis=others) + np.count_nonzero(r, axis=others)
        for index in np.flatnonzero(total > 0):
            out.append((int(label), int(index), 2.0 * float(tp[index]) / float(total[index])))
    return tuple(out)


def evaluate_labels(
    case: str,
    prediction: np.ndarray | None,
    reference: Volume,
    *,
    spec: DomainSpec,
    prediction_path: Path | None = None,
) -> CaseResult:
    """Metrics of a canonical label array against the canonical reference ``Volume``.

    ``prediction=None`` is a missed case (scored as an empty prediction).
    """
    ref = reference.array
    missing = prediction is None
    pred = np.zeros_like(ref) if prediction is None else prediction
    if pred.shape != ref.shape:
        where = prediction_path if prediction_path is not None else f"prediction of {case!r}"
        raise VolumeError(where, f"shape {pred.shape} differs from the reference's {ref.shape}")
    metrics = case_metrics(pred, ref, spacing=reference.spacing, label_ids=spec.label_ids)
    axis = resolve_slice_axis(spec, reference)
    samples = _slice_samples(pred, ref, axis=axis, label_ids=spec.label_ids)
    return CaseResult(
        case=case,
        reference=reference.path,
        prediction=prediction_path,
        metrics=tuple(metrics),
        slice_dice=samples,
        axis=axis,
        missing=missing,
    )


def evaluate_case(
    case: str, prediction: Path | None, reference: Path, *, spec: DomainSpec
) -> CaseResult:
    """Read and score one pair of files (``prediction=None``: missed case)."""
    allowed = (0, *spec.label_ids)
    ref = read_label(reference, allowed=allowed)
    if prediction is None:
        return evaluate_labels(case, None, ref, spec=spec)
    pred = read_label(prediction, allowed=allowed)
    try:
        check_pair(ref, pred)
    except VolumeError as error:
        detail = str(error).removeprefix(f"{error.path}: ")
        raise VolumeError(
            prediction, f"prediction does not lie on the grid of reference {reference}: {detail}"
        ) from None
    return evaluate_labels(case, pred.array, ref, spec=spec, prediction_path=prediction)


def evaluate_folders(
    prediction: Path,
    reference: Path,
    *,
    spec: DomainSpec,
    progress: Progress | None = None,
) -> Evaluation:
    """Score every reference case of ``reference`` against ``prediction`` (see the module doc)."""
    matching = match_files(prediction, reference)
    results: list[CaseResult] = []
    total = len(matching.pairs)
    for done, (case, pred, ref) in enumerate(matching.pairs, start=1):
        results.append(evaluate_case(case, pred, ref, spec=spec))
        if progress is not None:
            progress(case, done, total)
    return Evaluation(spec=spec, cases=tuple(results), ignored=matching.ignored)


# ------------------------------------------------------------------------------------ summary


def _json_number(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _summary_dict(summary: Summary) -> dict[str, Any]:
    return {
        "mean": _json_number(summary.mean),
        "std": _json_number(summary.std),
        "median": _json_number(summary.median),
        "n": summary.n,
        "n_empty_reference": summary.n_empty_reference,
        "n_empty_prediction": summary.n_empty_prediction,
    }


def _metrics_summary(metrics: Sequence[LabelMetrics]) -> dict[str, Any]:
    return {name: _summary_dict(_summarize_metric(metrics, name)) for name in METRIC_NAMES}


def summarize_cases(cases: Sequence[CaseResult], spec: DomainSpec) -> dict[str, Any]:
    """Per label and overall (all label-cases pooled) summaries of every metric of ``cases``."""
    if not cases:
        raise ConfigError(f"domain {spec.name!r}: no case to summarize; give reference label maps")
    labels: dict[str, Any] = {}
    for j, (label_id, name) in enumerate(spec.labels):
        per_label = [c.metrics[j] for c in cases]
        labels[str(label_id)] = {"name": name, "metrics": _metrics_summary(per_label)}
    pooled = [m for c in cases for m in c.metrics]
    return {
        "domain": spec.name,
        "descriptor_hash": spec.content_hash(),
        "n_cases": len(cases),
        "n_missing_predictions": sum(1 for c in cases if c.missing),
        "labels": labels,
        "overall": {"metrics": _metrics_summary(pooled)},
    }


# ------------------------------------------------------------------------------------ writing


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    return value


def write_csv(
    path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, object]], *, overwrite: bool
) -> None:
    """Write ``rows`` as CSV atomically (floats at full precision, booleans as 0/1)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _cell(row.get(key, "")) for key in columns})
    write_text_atomic(path, buffer.getvalue(), overwrite=overwrite)


def metric_rows(
    result: CaseResult, spec: DomainSpec, *, extra: Mapping[str, object] | None = None
) -> list[dict[str, object]]:
    """The ``metrics.csv`` rows of one case (``extra`` columns first, e.g. domain and fold)."""
    names = dict(spec.labels)
    rows: list[dict[str, object]] = []
    for m in result.metrics:
        row: dict[str, object] = dict(extra or {})
        row.update(case=result.case, label=m.label, label_name=names.get(m.label, ""))
        row.update({name: float(getattr(m, name)) for name in METRIC_NAMES})
        row.update(empty_reference=m.empty_reference, empty_prediction=m.empty_prediction)
        rows.append(row)
    return rows


def slice_rows(
    result: CaseResult, *, extra: Mapping[str, object] | None = None
) -> list[dict[str, object]]:
    """The ``slice_dice.csv`` rows of one case."""
    base = dict(extra or {})
    return [
        {**base, "case": result.case, "label": label, "slice": index, "dice": dice}
        for label, index, dice in result.slice_dice
    ]


def dump_json(payload: Mapping[str, Any]) -> str:
    """Strict JSON text (non-finite numbers must already be strings, see :func:`summarize_cases`)."""
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def write_evaluation(evaluation: Evaluation, out: Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``metrics.csv``, ``slice_dice.csv`` and ``summary.json`` into ``out``."""
    out = Path(out)
    paths = [out / "metrics.csv", out / "slice_dice.csv", out / "summary.json"]
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            raise OutputExistsError(
                existing[0], "pass --overwrite to replace it, or choose another --out"
            )
    spec = evaluation.spec
    metric_table = [row for c in evaluation.cases for row in metric_rows(c, spec)]
    slice_table = [row for c in evaluation.cases for row in slice_rows(c)]
    write_csv(paths[0], METRIC_COLUMNS, metric_table, overwrite=True)
    write_csv(paths[1], SLICE_COLUMNS, slice_table, overwrite=True)
    write_text_atomic(paths[2], dump_json(evaluation.summary()), overwrite=True)
    return paths
