"""The training configuration: one frozen, validated dataclass with a strict plain-dict round trip.

Schemes (paper Sec. 3.1):

* ``baseline``: one model per domain, trained independently (cross-entropy only). The run folder holds
  one complete sub-run per domain under ``RUN/baseline/<domain>`` and a top-level ``model.json`` that
  lists them.
* ``joint``: one model, one shared batch norm and one head over the union of all labels (domain ``k``'s
  label ``j`` gets its own global class; the mapping is recorded in ``model.json``).
* ``dsl``: domain-specific batch norms and heads (Eq. 1, 2).
* ``dsl-contrastive`` (default, the paper's proposal): ``dsl`` plus ``lam`` x supervised contrastive
  loss on the bottleneck embedding with temperature ``tau`` (Eq. 3).

``batch_size`` is the *global* batch of one optimisation step (all ranks together under DDP).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from pedseg.domains.spec import check_image_size
from pedseg.errors import ConfigError

__all__ = [
    "ARCHS",
    "SCHEDULES",
    "SCHEMES",
    "SEG_LOSSES",
    "Scheme",
    "TrainConfig",
    "resumable_changes",
]

Scheme = Literal["baseline", "joint", "dsl", "dsl-contrastive"]
SCHEMES: tuple[str, ...] = ("baseline", "joint", "dsl", "dsl-contrastive")
ARCHS: tuple[str, ...] = ("unet", "attention-unet")
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "off")
SEG_LOSSES: tuple[str, ...] = ("ce", "dice-ce")
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "poly")
KEEP_CHOICES: tuple[str, ...] = ("final", "best")

#: Keys that may differ between a run and its resumption (they do not change the results).
RESUMABLE_CHANGES: frozenset[str] = frozenset({"epochs", "num_workers", "keep"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the domain descriptors aside).

    Args:
        domains: domain names, in model order (domain index ``k`` = position).
        scheme: ``baseline`` | ``joint`` | ``dsl`` | ``dsl-contrastive``.
        arch: ``unet`` | ``attention-unet``.
        epochs: number of epochs.
        batch_size: slices per optimisation step (global, over all ranks); split evenly over domains.
        image_size: in-plane size (H, W); ``None`` = the descriptors' (which must then agree).
        base_width, depth: UNet width of the first level and number of resolution levels.
        lr: Adam learning rate.
        tau, lam: SupCon temperature and weight (``dsl-contrastive`` only).
        seg_loss: ``ce`` (the paper's Eq. 2) | ``dice-ce`` (Eq. 2 plus a multi-domain soft Dice
            loss; not in the paper, learns small structures in far fewer steps).
        seed: seeds initialisation, the validation split, sampling and augmentation.
        device: ``auto`` (cuda if available) | ``cpu`` | ``cuda`` | ``cuda:N``.
        steps_per_epoch: ``None`` = training slices // batch_size (at least 1).
        val_fraction: fraction of each domain's cases held out for validation (at least one case).
        val_cases: explicit validation case ids per domain (overrides ``val_fraction`` for those).
        fg_fraction: share of each domain's samples drawn from slices that contain foreground
            (foreground oversampling; 0 disables it).
        augment: random flip, +-25 % translation, +-45 degree rotation (the paper's).
        amp: ``auto`` (bf16 autocast on a GPU that supports it; on a CPU, bf16 where a measured
            step is faster: :mod:`pedseg.training.precision`) | ``bf16`` | ``off``.
        channels_last: ``None`` = on for GPU, measured on a CPU (the fastest layout).
        compile: wrap the model in ``torch.compile``.
        num_workers: threads that prefetch batches (0 = none); results do not depend on it.
        schedule: learning-rate schedule over the run's steps (:mod:`pedseg.training.schedule`):
            ``constant`` (the paper's) | ``cosine`` | ``poly``.
        warmup_steps: steps of linear warm-up at the start of the run (0 = none).
        min_lr_ratio: the fraction of ``lr`` a decaying schedule ends at.
        poly_power: exponent of the ``poly`` decay (nnU-Net: 0.9).
        keep: which epoch's weights the run keeps as its model: ``best`` (highest mean
            validation Dice; the paper's held-out validation examination) | ``final`` (the end of
            the schedule; with one or two validation cases per domain no worse on held-out cases
            on average and never far worse, where the best epoch once lost 8 points:
            ``benchmarks/results/selection.md``). Both checkpoints are kept either way.
    """

    domains: tuple[str, ...]
    scheme: Scheme = "dsl-contrastive"
    arch: str = "unet"
    epochs: int = 30
    batch_size: int = 32
    image_size: tuple[int, int] | None = (256, 256)
    base_width: int = 32
    depth: int = 5
    lr: float = 1e-4
    tau: float = 0.1
    lam: float = 0.1
    seg_loss: str = "ce"
    seed: int = 0
    device: str = "auto"
    steps_per_epoch: int | None = None
    val_fraction: float = 0.2
    val_cases: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fg_fraction: float = 1 / 3
    augment: bool = True
    amp: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    num_workers: int = 0
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    poly_power: float = 0.9
    keep: str = "best"

    def __post_init__(self) -> None:
        domains = _as_names(self.domains)
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "val_cases", _as_val_cases(self.val_cases))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", _as_size(self.image_size))
        if not domains:
            raise ConfigError("domains must name at least one domain, got none")
        if len(set(domains)) != len(domains):
            raise ConfigError(f"domains must not repeat a name, got {list(domains)}")
        _check_choice("scheme", self.scheme, SCHEMES)
        _check_choice("arch", self.arch, ARCHS)
        _check_choice("seg_loss", self.seg_loss, SEG_LOSSES)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 2)
        _check_int("base_width", self.base_width, 1)
        _check_int("depth", self.depth, 2)
        _check_int("seed", self.seed, 0)
        _check_int("num_workers", self.num_workers, 0)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("keep", self.keep, KEEP_CHOICES)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_float("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        _check_float("poly_power", self.poly_power, low=0.0, low_open=True)
        if self.steps_per_epoch is not None:
            _check_int("steps_per_epoch", self.steps_per_epoch, 1)
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("tau", self.tau, low=0.0, low_open=True)
        _check_float("lam", self.lam, low=0.0)
        _check_float("val_fraction", self.val_fraction, low=0.0, high=1.0, high_open=True)
        _check_float("fg_fraction", self.fg_fraction, low=0.0, high=1.0)
        if not isinstance(self.device, str) or not _valid_device(self.device):
            raise ConfigError(
                f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for flag in ("augment", "compile"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ConfigError(
                f"channels_last must be true, false or null, got {self.channels_last!r}"
            )
        self._check_consistency()

    def _check_consistency(self) -> None:
        """The checks that relate two fields to each other."""
        domains = self.domains
        if self.image_size is not None:
            multiple = 2 ** (self.depth - 1)
            if any(v % multiple for v in self.image_size):
                raise ConfigError(
                    f"image_size must be a multiple of 2**(depth-1) = {multiple} for depth "
                    f"{self.depth}, got {self.image_size[0]}x{self.image_size[1]}"
                )
        per_model = 1 if self.scheme == "baseline" else len(domains)
        if self.batch_size < 2 * per_model:
            raise ConfigError(
                f"batch_size must be >= 2 per domain (got {self.batch_size} for {per_model} "
                f"domains); use at least {2 * per_model}"
            )
        unknown = [name for name, _ in self.val_cases if name not in domains]
        if unknown:
            raise ConfigError(
                f"val_cases names domain {unknown[0]!r} which is not trained; "
                f"trained domains: {', '.join(domains)}"
            )

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def validation_cases(self, domain: str) -> tuple[str, ...]:
        """The explicit validation case ids of ``domain`` (empty = use ``val_fraction``)."""
        return dict(self.val_cases).get(domain, ())

    def to_dict(self, *, include_val_cases: bool = True) -> dict[str, Any]:
        """Plain JSON types. ``include_val_cases=False`` for artifacts that must hold no case ids."""
        out = asdict(self)
        out["domains"] = list(self.domains)
        out["image_size"] = None if self.image_size is None else list(self.image_size)
        if include_val_cases:
            out["val_cases"] = {name: list(ids) for name, ids in self.val_cases}
        else:
            del out["val_cases"]
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrainConfig:
        """Strict inverse of :meth:`to_dict`: unknown keys are a :class:`ConfigError`."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f"training config must be a mapping, got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(raw) - known)
        if extra:
            raise ConfigError(
                f"unknown training config key {extra[0]!r}; allowed: {', '.join(sorted(known))}"
            )
        if "domains" not in raw:
            raise ConfigError("training config needs 'domains' (a list of domain names)")
        values = dict(raw)
        if isinstance(values.get("val_cases"), Mapping):
            values["val_cases"] = tuple(
                (str(k), tuple(str(c) for c in v)) for k, v in values["val_cases"].items()
            )
        return cls(**values)

    def differences(self, other: TrainConfig, *, ignore: frozenset[str] = frozenset()) -> list[str]:
        """Human-readable ``"key was A, now B"`` for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key} was {_show(mine[key])}, now {_show(theirs[key])}"
            for key in mine
            if key not in ignore and mine[key] != theirs[key]
        ]


def resumable_changes(config: TrainConfig) -> frozenset[str]:
    """The keys a resumption of ``config``'s run may change.

    :data:`RESUMABLE_CHANGES`, except that ``epochs`` is fixed when the learning rate decays over
    the run (``schedule`` other than ``constant``): the schedule's horizon is ``epochs`` times the
    steps per epoch, so more epochs would change the rate of steps already planned.
    """
    if config.schedule == "constant":
        return RESUMABLE_CHANGES
    return RESUMABLE_CHANGES - {"epochs"}


def _show(value: Any) -> str:
    return str(value)


def _as_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"domains must be a list of domain names, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"domains must be a list of domain names, got {list(value)!r}")
    return tuple(value)


def _as_size(value: Any) -> tuple[int, int]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"image_size must be two integers (H, W) or null, got {value!r}")
    return check_image_size(tuple(value))


def _as_val_cases(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    out: list[tuple[str, tuple[str, ...]]] = []
    try:
        for name, ids in items:
            if not isinstance(name, str) or isinstance(ids, str):
                raise TypeError
            case_ids = tuple(ids)
            if not case_ids or not all(isinstance(c, str) and c for c in case_ids):
                raise TypeError
            out.append((name, case_ids))
    except (TypeError, ValueError):
        raise ConfigError(
            f"val_cases must map domain names to non-empty lists of case ids, got {value!r}"
        ) from None
    return tuple(sorted(out))


def _valid_device(device: str) -> bool:
    if device in ("auto", "cpu", "cuda"):
        return True
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _check_float(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        upper = "inf" if math.isinf(high) else f"{high:g}"
        raise ConfigError(f"{name} must be in {left}{low:g}, {upper}{right}, got {value!r}")
