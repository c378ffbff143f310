"""``pedseg demo``: the whole path on the phantom domains, in a few minutes on a laptop CPU.

synth (training and held-out phantoms) -> train the proposed model (DSBN-UNet + contrastive) briefly
-> export one ONNX graph per domain -> predict the held-out phantoms (ONNX Runtime, with the 3D
post-processing) -> evaluate them. Everything lands in one folder::

    OUT/data/<domain>/        training phantoms (MSD layout)
    OUT/heldout/<domain>/     held-out phantoms, generated from another seed
    OUT/run/                  the trained run (model.safetensors, model.json, curves.png, onnx/)
    OUT/predictions/<domain>/ label maps, per-case JSON reports and previews
    OUT/evaluation/<domain>/  metrics.csv, slice_dice.csv, summary.json

The demo deviates from the paper's training configuration on purpose (96x96 slices, width 16, 960
steps of 16 slices, Adam 2e-3 with a short warm-up and a cosine decay, cross-entropy + soft Dice so
that the small phantom bones are learnt within those steps; the final weights are kept, as the
``pedseg`` recipe does) so that it finishes in a few minutes on a 2-core CPU;
``benchmarks/bench_demo.py`` measures it over seeds. ``pedseg train --recipe paper`` keeps the
paper's configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pedseg.data.synth import PHANTOM_DOMAINS, PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.errors import ConfigError, OutputExistsError
from pedseg.io.atomic import write_text_atomic
from pedseg.training.config import TrainConfig
from pedseg.training.events import TrainEvent

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

logger = logging.getLogger(__name__)
_HELDOUT_SEED_OFFSET = 1000
MARKER = ".pedseg-demo"
_DEMO_ENTRIES = ("data", "heldout", "run", "cache", "predictions", "evaluation", MARKER)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo. The defaults take a few minutes on a 2-core CPU."""

    train_cases: int = 10
    heldout_cases: int = 2
    phantom_shape: tuple[int, int, int] = (96, 96, 32)
    image_size: int = 96
    base_width: int = 16
    depth: int = 5
    epochs: int = 24
    steps_per_epoch: int = 40
    batch_size: int = 16
    lr: float = 2e-3
    seg_loss: str = "dice-ce"
    schedule: str = "cosine"
    warmup_steps: int = 30
    keep: str = "final"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.train_cases < 3:
            raise ConfigError(
                f"train_cases must be >= 3 (training + validation), got {self.train_cases}"
            )
        if self.heldout_cases < 1:
            raise ConfigError(f"heldout_cases must be >= 1, got {self.heldout_cases}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ConfigError(
                f"epochs and steps_per_epoch must be >= 1, got {self.epochs} and {self.steps_per_epoch}"
            )

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke-test size (well under a minute): tiny images, widths and steps."""
        return cls(
            train_cases=3,
            heldout_cases=1,
            phantom_shape=(48, 48, 16),
            image_size=48,
            base_width=8,
            depth=4,
            epochs=2,
            steps_per_epoch=6,
            batch_size=8,
            warmup_steps=2,
        )


@dataclass(frozen=True)
class DemoResult:
    """Where everything went and how well the held-out phantoms were segmented."""

    out: Path
    run_dir: Path
    dice: dict[str, dict[str, float]]
    """domain -> label name -> mean Dice over the held-out cases."""
    backend: str
    seconds: dict[str, float] = field(default_factory=dict)


Progress = Callable[[str], None]


def run_demo(
    out: Path,
    *,
    config: DemoConfig | None = None,
    overwrite: bool = False,
    on_stage: Progress | None = None,
    on_train: Callable[[TrainEvent], None] | None = None,
) -> DemoResult:
    """Run the whole demo into ``out`` (refused if it exists and is not empty, unless overwrite)."""
    from pedseg.evaluation.evaluate import evaluate_folders, write_evaluation
    from pedseg.export.onnx import export_run
    from pedseg.inference.batch import BatchOptions, predict_cases
    from pedseg.inference.predictor import open_predictor
    from pedseg.runfolder.loading import load_run
    from pedseg.training.loop import train

    config = config or DemoConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(out, "pass --overwrite to replace it, or choose another --out")
        _clear_demo(out)
    write_text_atomic(out / MARKER, "written by pedseg demo; --overwrite may replace this folder\n")
    stage = on_stage or (lambda _message: None)
    seconds: dict[str, float] = {}
    domains = PHANTOM_DOMAINS
    phantom = PhantomConfig(shape=config.phantom_shape)

    started = time.perf_counter()
    stage(
        f"generating {config.train_cases} training + {config.heldout_cases} held-out phantoms per domain"
    )
    synth_dataset(
        out / "data", domains=domains, cases=config.train_cases, seed=config.seed, config=phantom
    )
    synth_dataset(
        out / "heldout",
        domains=domains,
        cases=config.heldout_cases,
        seed=config.seed + _HELDOUT_SEED_OFFSET,
        config=phantom,
    )
    seconds["synth"] = time.perf_counter() - started

    registry = DomainRegistry()
    specs = registry.resolve(domains, data={d: out / "data" / d for d in domains})
    train_config = TrainConfig(
        domains=tuple(domains),
        scheme="dsl-contrastive",
        epochs=config.epochs,
        batch_size=config.batch_size,
        image_size=(config.image_size, config.image_size),
        base_width=config.base_width,
        depth=config.depth,
        lr=config.lr,
        seg_loss=config.seg_loss,
        schedule=config.schedule,
        warmup_steps=config.warmup_steps,
        min_lr_ratio=0.01,
        keep=config.keep,
        seed=config.seed,
        steps_per_epoch=config.steps_per_epoch,
        device=config.device,
    )
    started = time.perf_counter()
    stage("training the proposed model (DSBN-UNet + contrastive regularisation)")
    result = train(
        train_config, specs, out=out / "run", cache_root=out / "cache", callback=on_train
    )
    seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    stage("exporting one ONNX graph per domain")
    export_run(load_run(result.run_dir))
    seconds["export"] = time.perf_counter() - started

    started = time.perf_counter()
    dice: dict[str, dict[str, float]] = {}
    backend = ""
    for spec in specs:
        stage(f"predicting and evaluating the held-out {spec.name} phantoms")
        predictor = open_predictor(result.run_dir, spec.name, device=config.device)
        backend = predictor.backend.name
        predictions = out / "predictions" / spec.name
        predict_cases(
            predictor,
            [out / "heldout" / spec.name / "imagesTr"],
            BatchOptions(out=predictions, preview=True),
        )
        evaluation = evaluate_folders(
            predictions, out / "heldout" / spec.name / "labelsTr", spec=registry.get(spec.name)
        )
        write_evaluation(evaluation, out / "evaluation" / spec.name)
        summary = evaluation.summary()
        dice[spec.name] = {
            entry["name"]: float(entry["metrics"]["dice"]["mean"])
            for entry in summary["labels"].values()
        }
    seconds["predict_evaluate"] = time.perf_counter() - started
    return DemoResult(out=out, run_dir=result.run_dir, dice=dice, backend=backend, seconds=seconds)


def _clear_demo(out: Path) -> None:
    """Remove an earlier demo; refuse any folder the demo did not write (checked before deleting)."""
    import shutil

    foreign = sorted(p.name for p in out.iterdir() if p.name not in _DEMO_ENTRIES)
    if not (out / MARKER).is_file() or foreign:
        listing = ", ".join(foreign[:3]) or "no demo marker"
        raise OutputExistsError(
            out, f"holds files the demo did not write ({listing}); choose another --out"
        )
    for name in _DEMO_ENTRIES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
