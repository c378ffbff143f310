"""Accuracy verification and speed record of an int8 export against its fp32 graph.

Verification (:func:`verify_int8`): every validation case of the domain (the run's held-out cases)
is read once and predicted whole by two predictors (pedseg's
:class:`~pedseg.inference.predictor.Predictor`, one over the fp32 graph and one over the int8
graph, :mod:`pedseg.inference.int8_export`), so preprocessing and post-processing are identical. Two figures decide:

* **agreement**, per volume: the mean over the domain's labels present in either label map of the
  Dice between the fp32 and the int8 label maps (1 when neither holds any label); every volume must
  reach :data:`AGREEMENT_MIN`;
* **Dice against the reference labels**, per label: its mean over the volumes (Dice 1 when both maps
  lack the label, 0 when only one has it); no label's int8 mean may be lower than its fp32 mean by
  more than :data:`MAX_DICE_DROP` (0.5 Dice points).

Speed (:func:`measure_speed`): slices per second of both graphs on one batch of real slices with
onnxruntime on the CPU, interleaved (fp32, int8, fp32, ...) and the best round of each kept, so load
from other processes hits both alike. The record names the CPU model it was measured on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pedseg.data.dataset import Case
from pedseg.domains.spec import DomainSpec
from pedseg.errors import DatasetError, ModelError, VolumeError
from pedseg.export.cpu import cpu_flags, cpu_model
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.volume import Volume

__all__ = [
    "AGREEMENT_MIN",
    "MAX_DICE_DROP",
    "SpeedRecord",
    "Verification",
    "VolumePredictor",
    "check_verification",
    "dice",
    "measure_speed",
    "verify_int8",
]

AGREEMENT_MIN = 0.98
MAX_DICE_DROP = 0.005
SPEED_ROUNDS = 3


class _Labelled(Protocol):
    @property
    def labels(self) -> np.ndarray: ...


class VolumePredictor(Protocol):
    """What verification needs of a predictor (:class:`pedseg.inference.predictor.Predictor`)."""

    def predict(self, volume: Volume) -> _Labelled: ...


@dataclass(frozen=True)
class Verification:
    """The figures of one int8 verification (see the module docstring)."""

    cases: tuple[str, ...]
    agreement: tuple[float, ...]
    """Per case, int8 vs fp32 label maps."""
    dice_fp32: Mapping[str, float]
    """Per label name, the mean Dice of the fp32 predictions against the reference labels."""
    dice_int8: Mapping[str, float]
    agreement_min: float = AGREEMENT_MIN
    max_dice_drop: float = MAX_DICE_DROP

    @property
    def min_agreement(self) -> float:
        return min(self.agreement) if self.agreement else 1.0

    @property
    def worst_drop(self) -> tuple[str, float]:
        """The label whose Dice fell most from fp32 to int8, and by how much (Dice fraction)."""
        drops = {name: self.dice_fp32[name] - self.dice_int8[name] for name in self.dice_fp32}
        if not drops:
            return ("none", 0.0)
        name = max(drops, key=lambda k: drops[k])
        return name, drops[name]

    @property
    def passed(self) -> bool:
        return self.min_agreement >= self.agreement_min and self.worst_drop[1] <= self.max_dice_drop

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "cases": len(self.cases),
            "agreement_per_case": [round(v, 6) for v in self.agreement],
            "agreement_min": round(self.min_agreement, 6),
            "dice_fp32": {k: round(v, 6) for k, v in self.dice_fp32.items()},
            "dice_int8": {k: round(v, 6) for k, v in self.dice_int8.items()},
            "thresholds": {"agreement": self.agreement_min, "max_dice_drop": self.max_dice_drop},
        }


@dataclass(frozen=True)
class SpeedRecord:
    """onnxruntime slices per second of both graphs, measured on one CPU."""

    cpu: str
    threads: int
    batch: int
    image_size: tuple[int, int]
    fp32_slices_per_s: float
    int8_slices_per_s: float

    @property
    def speedup(self) -> float:
        return self.int8_slices_per_s / self.fp32_slices_per_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "cpu_flags": [name for name, present in cpu_flags().items() if present],
            "threads": self.threads,
            "batch": self.batch,
            "image_size": list(self.image_size),
            "fp32_slices_per_s": round(self.fp32_slices_per_s, 3),
            "int8_slices_per_s": round(self.int8_slices_per_s, 3),
            "speedup": round(self.speedup, 3),
        }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """``2|a∩b| / (|a|+|b|)`` of two boolean masks; 1 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def verify_int8(
    fp32: VolumePredictor, int8: VolumePredictor, cases: Sequence[Case], *, spec: DomainSpec
) -> Verification:
    """Predict every case with both predictors and collect the figures (no threshold applied)."""
    if not cases:
        raise DatasetError(f"domain {spec.name!r}: no validation cases to verify the int8 graph on")
    agreement: list[float] = []
    per_label: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for _, n in spec.labels}
    for case in cases:
        if case.label is None:
            raise DatasetError(f"domain {spec.name!r}, case {case.case_id!r}: no label file")
        try:
            image = read_volume(case.image)
            reference = read_label(case.label, allowed={0, *spec.label_ids})
            check_pair(image, reference)
        except VolumeError as exc:
            raise DatasetError(f"domain {spec.name!r}, case {case.case_id!r}: {exc}") from exc
        a = fp32.predict(image).labels
        b = int8.predict(image).labels
        ref = np.asarray(reference.array)
        present = [i for i, _ in spec.labels if np.any(a == i) or np.any(b == i)]
        agreement.append(
            float(np.mean([dice(a == i, b == i) for i in present])) if present else 1.0
        )
        for label, name in spec.labels:
            per_label[name][0].append(dice(a == label, ref == label))
            per_label[name][1].append(dice(b == label, ref == label))
    return Verification(
        cases=tuple(c.case_id for c in cases),
        agreement=tuple(agreement),
        dice_fp32={name: float(np.mean(v[0])) for name, v in per_label.items()},
        dice_int8={name: float(np.mean(v[1])) for name, v in per_label.items()},
        agreement_min=AGREEMENT_MIN,
        max_dice_drop=MAX_DICE_DROP,
    )


def check_verification(result: Verification, *, domain: str) -> None:
    """Raise :class:`ModelError` with the figures unless ``result`` passed."""
    if result.passed:
        return
    label, drop = result.worst_drop
    raise ModelError(
        f"int8 graph of {domain} failed verification on {len(result.cases)} validation case(s): "
        f"agreement with fp32 min {result.min_agreement:.4f} (needs >= {result.agreement_min}), "
        f"largest Dice drop {100 * drop:.2f} points on {label} (allowed {100 * result.max_dice_drop:.1f}); "
        "nothing was written; try another --calibration method or more --calibration-slices"
    )


def measure_speed(
    fp32: Callable[[np.ndarray], np.ndarray],
    int8: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    *,
    threads: int,
    rounds: int = SPEED_ROUNDS,
) -> SpeedRecord:
    """Best-of-``rounds`` slices/s of both backends on ``images`` (N, H, W), interleaved."""
    batch = np.ascontiguousarray(images[:, None], dtype=np.float32)
    if batch.shape[0] == 0:
        raise ModelError("no slices to measure the int8 speed on")
    best = {"fp32": float("inf"), "int8": float("inf")}
    backends = {"fp32": fp32, "int8": int8}
    for backend in backends.values():  # warm-up: first runs allocate and plan
        backend(batch)
    for _ in range(rounds):
        for key, backend in backends.items():
            start = time.perf_counter()
            backend(batch)
            best[key] = min(best[key], time.perf_counter() - start)
    n = batch.shape[0]
    return SpeedRecord(
        cpu=cpu_model(),
        threads=threads,
        batch=n,
        image_size=(int(batch.shape[2]), int(batch.shape[3])),
        fp32_slices_per_s=n / max(best["fp32"], 1e-9),
        int8_slices_per_s=n / max(best["int8"], 1e-9),
    )
