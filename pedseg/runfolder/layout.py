"""The run folder's layout: the one place that names its files.

```
RUN/
  model.json             the model card (:mod:`pedseg.runfolder.card`)
  model.safetensors      the kept weights (no pickle): the final or the best epoch's (``keep``);
                         SHA-256 in the card
  metrics.csv            one row per epoch
  curves.png             losses and validation Dice per epoch
  domains.safetensors    per-domain embedding profiles (recognition); SHA-256 in the card
  domains.json           their readable summary
  checkpoints/latest/    resumable state (:mod:`pedseg.runfolder.checkpoint`)
  checkpoints/best/
  onnx/<domain>.onnx     after ``pedseg export-onnx``; SHA-256 in the card
  onnx/<domain>.int8.onnx  after ``pedseg export-onnx --int8`` (statically quantised, verified)
  baseline/<domain>/     the baseline scheme: one complete run folder per domain
```

Nothing else in pedseg spells these names: readers and writers ask a :class:`RunLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

__all__ = ["CURVES", "CheckpointName", "RunLayout", "is_run_folder"]

CheckpointName = Literal["latest", "best"]

MODEL_CARD = "model.json"
WEIGHTS = "model.safetensors"
METRICS = "metrics.csv"
CURVES = "curves.png"
PROFILES = "domains.safetensors"
PROFILE_SUMMARY = "domains.json"
CHECKPOINTS = "checkpoints"
ONNX_DIR = "onnx"
INT8_SUFFIX = ".int8.onnx"
BASELINE_DIR = "baseline"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder ``root`` (nothing is checked or created here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def card(self) -> Path:
        return self.root / MODEL_CARD

    @property
    def weights(self) -> Path:
        return self.root / WEIGHTS

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @property
    def curves(self) -> Path:
        return self.root / CURVES

    @property
    def profiles(self) -> Path:
        return self.root / PROFILES

    @property
    def profile_summary(self) -> Path:
        return self.root / PROFILE_SUMMARY

    @property
    def onnx_dir(self) -> Path:
        return self.root / ONNX_DIR

    def checkpoint(self, name: CheckpointName = "latest") -> Path:
        """The folder of the ``latest`` or ``best`` checkpoint."""
        return self.root / CHECKPOINTS / name

    def onnx(self, domain: str, *, folder: Path | None = None) -> Path:
        """The ONNX export of ``domain`` (in ``folder``, default ``RUN/onnx``)."""
        return (self.onnx_dir if folder is None else Path(folder)) / f"{domain}.onnx"

    def onnx_int8(self, domain: str, *, folder: Path | None = None) -> Path:
        """The int8 (statically quantised) ONNX export of ``domain`` (in ``folder``, default
        ``RUN/onnx``); ``folder`` may be any folder of exports, a run is not needed."""
        return (self.onnx_dir if folder is None else Path(folder)) / f"{domain}{INT8_SUFFIX}"

    @staticmethod
    def is_int8_export(path: Path) -> bool:
        """Whether the file name is that of an int8 export (``<domain>.int8.onnx``)."""
        return Path(path).name.endswith(INT8_SUFFIX)

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder, POSIX-style (the key of the card's artifacts)."""
        return PurePosixPath(Path(path).relative_to(self.root)).as_posix()

    @staticmethod
    def member_name(domain: str) -> str:
        """A baseline member's folder, relative to the run folder (as the card records it)."""
        return f"{BASELINE_DIR}/{domain}"

    def member(self, domain: str) -> RunLayout:
        """The baseline scheme's run folder of ``domain``."""
        return RunLayout(self.root / BASELINE_DIR / domain)

    def resolve_member(self, relative: str) -> RunLayout | None:
        """The member folder a card names, or ``None`` when it would leave the run folder."""
        parts = PurePosixPath(relative).parts
        if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
            return None
        return RunLayout(self.root.joinpath(*parts))


def is_run_folder(path: Path) -> bool:
    """A folder holding a model card."""
    return Path(path).is_dir() and RunLayout(Path(path)).card.is_file()
