"""The paper's cross-validation protocol (``pedseg crossval``): plan, train, predict, evaluate.

```
OUT/
  folds.json                  the plan (fold -> domain -> train/val/test case ids), written first
  crossval.json               settings and the state of every (method, fold); rewritten atomically
  folds/fold-<i>/<domain>/    the fold's training data: hard links (copies across file systems)
                              of its train + validation cases, in the domain's MSD layout
  cache/fold-<i>/             slice caches of the fold's training data (shared by the methods)
  <scheme>-<arch>/
    fold-<i>/run/             the trained run folder (baseline: run/baseline/<domain>/)
    fold-<i>/metrics.csv      per-case metrics of the fold's test cases (+ slice_dice.csv)
    predictions/<domain>/<case>.nii.gz   test predictions, post-processed like ``pedseg predict``
    metrics.csv, slice_dice.csv          every fold's rows, with ``domain`` and ``fold`` columns
    summary.json              per domain: the summaries of ``pedseg evaluate``
```

Test cases are kept out of training by the data itself: a fold trains on descriptors whose
``data.root`` is the fold's folder (train + validation cases; hard links, as the dataset scanner
refuses symbolic links that leave ``data.root``) and pins the validation case with ``val_cases``.
Interrupted runs continue: a ``done`` fold whose predictions and metrics exist is skipped; a run
with a checkpoint is resumed; a finished run whose predictions vanished is only predicted again.
Each fold's ``train`` call records its run as pedseg's "last run".
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pedseg.data.dataset import Case, list_cases
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DatasetError
from pedseg.evaluation.crossval_summary import FOLD_COLUMNS, aggregate_method
from pedseg.evaluation.evaluate import (
    METRIC_COLUMNS,
    SLICE_COLUMNS,
    CaseResult,
    evaluate_labels,
    metric_rows,
    slice_rows,
    write_csv,
)
from pedseg.evaluation.protocol import (
    CrossvalState,
    Fold,
    FoldPlan,
    fold_data,
    plan_folds,
    save_plan,
)
from pedseg.io import Volume, check_pair, read_label, read_volume, write_like
from pedseg.io.atomic import make_folder
from pedseg.runfolder import RunLayout, is_run_folder
from pedseg.training.config import ARCHS, SCHEMES, TrainConfig

if TYPE_CHECKING:  # keeps torch out of the import path
    from pedseg.training.events import TrainEvent

__all__ = [
    "CrossvalConfig",
    "CrossvalEvent",
    "CrossvalResult",
    "MethodResult",
    "method_name",
    "run_crossval",
]

EventKind = Literal["plan", "fold_start", "fold_skip", "train", "predict", "fold_end", "method_end"]


def method_name(scheme: str, arch: str) -> str:
    """The folder name of a method: ``<scheme>-<arch>``."""
    return f"{scheme}-{arch}"


@dataclass(frozen=True)
class CrossvalConfig:
    """What to cross-validate: a training template and the methods (scheme x arch) to compare.

    ``train`` holds the domains and every training option; its ``scheme``, ``arch`` and
    ``val_cases`` are replaced per method and fold. ``folds=None`` is leave-one-out.
    """

    train: TrainConfig
    schemes: tuple[str, ...] = ("dsl-contrastive",)
    archs: tuple[str, ...] = ("unet",)
    folds: int | None = None
    max_folds: int | None = None
    predict_batch_size: int = 8
    shard: tuple[int, int] | None = None
    """``(i, n)``: run only the ``i``-th of ``n`` interleaved parts of the (method, fold) jobs
    (1-based); ``pedseg compare`` merges the parts' folders."""
    budget_s: float | None = None
    """Every (method, fold) training run's wall-clock budget: each fold is planned for it from
    its own training data (``pedseg plan``) and each run fitted to it (a baseline shares it
    between its per-domain models), so that the methods are compared at equal cost."""
    explicit: tuple[str, ...] = ()
    """The ``train`` fields the user gave: with a budget they override the plan's."""
    tta: bool = False
    """Predict the test cases with test-time augmentation (:mod:`pedseg.inference.tta`)."""

    def __post_init__(self) -> None:
        for field, values, known in (
            ("schemes", self.schemes, SCHEMES),
            ("archs", self.archs, ARCHS),
        ):
            if not values:
                raise ConfigError(f"--{field} needs at least one of {', '.join(known)}")
            bad = [v for v in values if v not in known]
            if bad:
                raise ConfigError(f"--{field}: unknown {bad[0]!r}; choose from {', '.join(known)}")
            if len(set(values)) != len(values):
                raise ConfigError(f"--{field} names a value twice: {' '.join(values)}")
        if self.folds is not None and (isinstance(self.folds, bool) or self.folds < 2):
            raise ConfigError(f"--folds must be 'loo' or an integer >= 2, got {self.folds!r}")
        if self.max_folds is not None and (isinstance(self.max_folds, bool) or self.max_folds < 1):
            raise ConfigError(f"--max-folds must be a positive integer, got {self.max_folds!r}")
        if isinstance(self.predict_batch_size, bool) or self.predict_batch_size < 1:
            raise ConfigError(
                f"predict_batch_size must be a positive integer, got {self.predict_batch_size!r}"
            )
        if self.shard is not None:
            index, count = self.shard
            if not (isinstance(index, int) and isinstance(count, int) and 1 <= index <= count):
                raise ConfigError(f"--shard must be I/N with 1 <= I <= N, got {index}/{count}")

    def in_shard(self, job: int) -> bool:
        """Whether the ``job``-th (method, fold) job (methods outer, folds inner) is this
        shard's: jobs are dealt round-robin, so every part gets a mix of methods and folds."""
        return self.shard is None or job % self.shard[1] == self.shard[0] - 1

    @property
    def methods(self) -> tuple[tuple[str, str], ...]:
        return tuple((scheme, arch) for scheme in self.schemes for arch in self.archs)

    def settings(self) -> dict[str, Any]:
        """What must not change when an interrupted cross-validation is continued."""
        training = self.train.to_dict(include_val_cases=False)
        for key in ("scheme", "arch", "num_workers"):
            training.pop(key, None)
        settings: dict[str, Any] = {
            "folds": "loo" if self.folds is None else self.folds,
            "training": training,
        }
        if self.budget_s is not None:
            settings["budget_s"] = self.budget_s
            settings["explicit"] = sorted(self.explicit)
        if self.tta:
            settings["tta"] = True
        if self.shard is not None:
            settings["shard"] = f"{self.shard[0]}/{self.shard[1]}"
            settings["methods"] = [method_name(s, a) for s, a in self.methods]
        return settings


@dataclass(frozen=True)
class CrossvalEvent:
    """Progress for the CLI. ``train`` events carry the training loop's event."""

    kind: EventKind
    method: str = ""
    fold: int = -1
    folds: int = 0
    domain: str = ""
    case: str = ""
    message: str = ""
    train_event: TrainEvent | None = None


@dataclass(frozen=True)
class MethodResult:
    """A method's folder (``metrics.csv``, ``slice_dice.csv``, ``summary.json``) and its folds."""

    method: str
    folder: Path
    folds_run: tuple[int, ...]
    folds_skipped: tuple[int, ...]


@dataclass(frozen=True)
class CrossvalResult:
    out: Path
    plan: FoldPlan
    methods: tuple[MethodResult, ...]


Callback = Callable[[CrossvalEvent], None]


# ------------------------------------------------------------------------------ one fold


def _has_checkpoint(run_dir: Path) -> bool:
    """True when the run (or a baseline member) saved a resumable checkpoint."""
    from pedseg.runfolder.checkpoint import has_checkpoint

    return has_checkpoint(RunLayout(run_dir))


def _train_fold(
    config: CrossvalConfig,
    scheme: str,
    arch: str,
    fold: Fold,
    specs: Sequence[DomainSpec],
    run_dir: Path,
    cache_root: Path,
    emit: Callable[[TrainEvent], None],
) -> None:
    from pedseg.training.loop import train
    from pedseg.training.runner import Budget

    val_cases = tuple((name, fold.domain(name).val) for name in config.train.domains)
    base = config.train if config.budget_s is None else _planned(config, specs, cache_root)
    fold_config = replace(
        base,
        scheme=scheme,  # type: ignore[arg-type]  # validated by CrossvalConfig
        arch=arch,
        val_cases=val_cases,
    )
    resume = _has_checkpoint(run_dir)
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a start that wrote no checkpoint: nothing worth keeping
    budget = None
    if config.budget_s is not None:
        budget = Budget(seconds=config.budget_s, started=time.monotonic())
    train(
        fold_config,
        specs,
        out=run_dir,
        resume=resume,
        cache_root=cache_root,
        callback=emit,
        budget=budget,
    )


def _planned(config: CrossvalConfig, specs: Sequence[DomainSpec], cache_root: Path) -> TrainConfig:
    """The fold's training config planned for the budget from its own training data (no test
    case plays a part), with the options the user gave kept."""
    from pedseg.planning.api import plan_run
    from pedseg.planning.plan import OVERRIDABLE, train_kwargs

    given = {name: getattr(config.train, name) for name in config.explicit}
    plan = plan_run(
        specs,
        budget_s=float(config.budget_s or 0.0),
        device=config.train.device,
        cache_root=cache_root,
        overrides={k: v for k, v in given.items() if k in OVERRIDABLE},
    ).plan
    values = {**config.train.to_dict(include_val_cases=False), **train_kwargs(plan)}
    values.update(given)
    values["domains"] = config.train.domains
    return TrainConfig.from_dict(values)


def _predict_fold(
    config: CrossvalConfig,
    fold: Fold,
    specs: Sequence[DomainSpec],
    cases: Mapping[str, Mapping[str, Case]],
    run_dir: Path,
    pred_root: Path,
    emit: Callable[[str, str], None],
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    from pedseg.inference.predictor import open_predictor

    metrics: list[dict[str, object]] = []
    slices: list[dict[str, object]] = []
    for spec in specs:
        part = fold.domain(spec.name)
        if not part.test:
            continue
        predictor = open_predictor(
            run_dir,
            spec.name,
            backend="torch",
            device=config.train.device,
            batch_size=config.predict_batch_size,
            tta=config.tta,
        )
        for case_id in part.test:
            emit(spec.name, case_id)
            case = cases[spec.name][case_id]
            volume = read_volume(case.image)
            labels = predictor.predict(volume).labels
            path = pred_root / spec.name / f"{case_id}.nii.gz"
            write_like(labels, volume, path, overwrite=True)
            result = _score(case, labels, volume, spec, path)
            extra = {"domain": spec.name, "fold": fold.index}
            metrics += metric_rows(result, spec, extra=extra)
            slices += slice_rows(result, extra=extra)
    return metrics, slices


def _score(
    case: Case, labels: np.ndarray, volume: Volume, spec: DomainSpec, path: Path
) -> CaseResult:
    reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
    check_pair(volume, reference)
    return evaluate_labels(case.case_id, labels, reference, spec=spec, prediction_path=path)


def _fold_complete(fold: Fold, fold_dir: Path, method_dir: Path) -> bool:
    if not (fold_dir / "metrics.csv").is_file() or not (fold_dir / "slice_dice.csv").is_file():
        return False
    return all(
        (method_dir / "predictions" / name / f"{case_id}.nii.gz").is_file()
        for name, part in fold.domains
        for case_id in part.test
    )


# ------------------------------------------------------------------------------ the runner


def _all_cases(specs: Sequence[DomainSpec]) -> dict[str, dict[str, Case]]:
    out: dict[str, dict[str, Case]] = {}
    for spec in specs:
        out[spec.name] = {c.case_id: c for c in list_cases(spec)}
        unlabeled = [c.image.name for c in out[spec.name].values() if c.label is None]
        if unlabeled:
            raise DatasetError(
                f"domain {spec.name!r}: image {unlabeled[0]} has no label map; cross-validation "
                f"needs a label for every case (run `pedseg check {spec.name}`)"
            )
    return out


def _order(config: CrossvalConfig, specs: Sequence[DomainSpec]) -> list[DomainSpec]:
    by_name = {spec.name: spec for spec in specs}
    missing = [name for name in config.train.domains if name not in by_name]
    if missing:
        raise ConfigError(f"no descriptor was given for domain {missing[0]!r}")
    return [by_name[name] for name in config.train.domains]


def run_crossval(
    config: CrossvalConfig,
    specs: Sequence[DomainSpec],
    *,
    out: Path,
    cache_root: Path | None = None,
    callback: Callback | None = None,
) -> CrossvalResult:
    """Run (or continue) the cross-validation of ``config`` into ``out``; see the module doc."""
    out = Path(out)
    ordered = _order(config, specs)
    cases = _all_cases(ordered)
    plan = plan_folds(
        {name: sorted(ids) for name, ids in cases.items()},
        folds=config.folds,
        seed=config.train.seed,
        max_folds=config.max_folds,
    )
    make_folder(out)
    save_plan(out / "folds.json", plan)
    hashes = {spec.name: spec.content_hash() for spec in ordered}
    state = CrossvalState(out / "crossval.json", {**config.settings(), "descriptors": hashes})
    run = _Run(config, plan, ordered, cases, out, cache_root, state, callback or _ignore)
    run.notify(CrossvalEvent("plan", folds=len(plan.folds), message=str(out / "folds.json")))
    results = [
        _run_method(run, scheme, arch, first_job=k * len(plan.folds))
        for k, (scheme, arch) in enumerate(config.methods)
    ]
    return CrossvalResult(out=out, plan=plan, methods=tuple(results))


def _ignore(event: CrossvalEvent) -> None:
    del event


@dataclass(frozen=True, eq=False)
class _Run:
    """What every fold of every method shares."""

    config: CrossvalConfig
    plan: FoldPlan
    specs: Sequence[DomainSpec]
    cases: Mapping[str, Mapping[str, Case]]
    out: Path
    cache_root: Path | None
    state: CrossvalState
    notify: Callback


def _run_method(run: _Run, scheme: str, arch: str, *, first_job: int) -> MethodResult:
    method = method_name(scheme, arch)
    folder = run.out / method
    ran: list[int] = []
    skipped: list[int] = []
    for offset, fold in enumerate(run.plan.folds):
        if not run.config.in_shard(first_job + offset):
            continue
        status = run.state.status(method, fold.index)
        event = CrossvalEvent(
            "fold_skip", method=method, fold=fold.index, folds=len(run.plan.folds)
        )
        if status == "done" and _fold_complete(fold, folder / f"fold-{fold.index}", folder):
            skipped.append(fold.index)
            run.notify(event)
            continue
        run.notify(replace(event, kind="fold_start"))
        _run_fold(run, scheme, arch, fold, status, event)
        ran.append(fold.index)
        run.notify(replace(event, kind="fold_end"))
    aggregate_method(folder, run.plan, run.specs, method, scheme, arch)
    run.notify(
        CrossvalEvent("method_end", method=method, folds=len(run.plan.folds), message=str(folder))
    )
    return MethodResult(method, folder, folds_run=tuple(ran), folds_skipped=tuple(skipped))


def _run_fold(
    run: _Run, scheme: str, arch: str, fold: Fold, status: str, event: CrossvalEvent
) -> None:
    """Train (or resume) unless the fold's run finished, then predict and score its test cases."""
    method = event.method
    fold_dir = run.out / method / f"fold-{fold.index}"
    run_dir = fold_dir / "run"
    if status not in ("trained", "done") or not is_run_folder(run_dir):
        run.state.set(method, fold.index, "training")
        specs = fold_data(run.specs, run.cases, fold, run.out / "folds" / f"fold-{fold.index}")
        cache = (run.cache_root or run.out / "cache") / f"fold-{fold.index}"

        def on_train(train_event: TrainEvent) -> None:
            run.notify(replace(event, kind="train", train_event=train_event))

        _train_fold(run.config, scheme, arch, fold, specs, run_dir, cache, on_train)
        run.state.set(method, fold.index, "trained")

    def on_case(domain: str, case: str) -> None:
        run.notify(replace(event, kind="predict", domain=domain, case=case))

    pred_root = run.out / method / "predictions"
    metrics, slices = _predict_fold(
        run.config, fold, run.specs, run.cases, run_dir, pred_root, on_case
    )
    write_csv(fold_dir / "metrics.csv", (*FOLD_COLUMNS, *METRIC_COLUMNS), metrics, overwrite=True)
    write_csv(fold_dir / "slice_dice.csv", (*FOLD_COLUMNS, *SLICE_COLUMNS), slices, overwrite=True)
    run.state.set(method, fold.index, "done")
