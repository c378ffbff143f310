"""Resumable checkpoints: safetensors + JSON only (nothing is ever unpickled).

A checkpoint is a folder (``RUN/checkpoints/latest`` or ``best``) holding

* ``model.safetensors``: the model's ``state_dict`` (weights and batch-norm buffers);
* ``optimizer.safetensors``: the optimizer's per-parameter state tensors flattened to names
  ``state.<param index>.<key>`` (Adam: ``step``, ``exp_avg``, ``exp_avg_sq``);
* ``rng.safetensors``: torch's CPU RNG state (uint8) and every CUDA device's (``cuda.<i>``);
* ``state.json`` (written last): epoch, global step, config, the optimizer's param groups, Python's
  and numpy's RNG states as plain lists, whatever run state the loop adds (best metric,
  validation case ids, descriptor hashes, the metrics history) and the SHA-256 of each
  ``.safetensors`` file, checked before anything is restored (a damaged checkpoint is refused,
  never resumed from).

Writing is atomic per folder: everything goes into a hidden temporary folder, then the old folder is
moved aside, the new one renamed into place and the old one deleted. If the process dies between the
two renames, :func:`find_checkpoint` still finds the moved-aside copy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from pedseg.errors import IntegrityError, ModelError, OutputExistsError, TrainingError
from pedseg.io.atomic import make_folder, output_errors
from pedseg.runfolder.integrity import file_sha256, verify_sha256
from pedseg.runfolder.layout import RunLayout

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_run_dir",
    "find_checkpoint",
    "has_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng",
    "rng_state",
    "save_checkpoint",
    "state_tensors",
]

CHECKPOINT_FORMAT = 1
STATE = "state.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
RNG = "rng.safetensors"
TENSOR_FILES = (MODEL, OPTIMIZER, RNG)


def state_tensors(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict as contiguous CPU tensors (what safetensors stores)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def rng_state() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Every RNG's state: plain JSON types (Python, numpy) and tensors (torch CPU, CUDA)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    plain: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": [int(v) for v in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
    }
    tensors = {"torch_cpu": torch.get_rng_state().contiguous()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state.contiguous()
    return plain, tensors


def restore_rng(plain: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = plain["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    saved = plain["numpy"]
    np.random.set_state(
        {
            "bit_generator": saved["bit_generator"],
            "state": {"key": np.asarray(saved["key"], dtype=np.uint32), "pos": saved["pos"]},
            "has_gauss": saved["has_gauss"],
            "gauss": saved["gauss"],
        }
    )
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [
            tensors[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in tensors
        ]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _optimizer_payload(optimizer: torch.optim.Optimizer) -> tuple[list[Any], dict[str, Tensor]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensor = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"state.{index}.{key}"] = tensor.detach().to("cpu").contiguous()
    groups = json.loads(json.dumps(state["param_groups"], default=_plain))
    return groups, tensors


def _plain(value: object) -> object:
    if isinstance(value, Tensor):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, groups: list[Any], tensors: dict[str, Tensor]
) -> None:
    per_param: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        per_param.setdefault(int(index), {})[key] = tensor
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def save_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> None:
    """Write a complete checkpoint to ``folder`` atomically (see the module docstring)."""
    make_folder(folder.parent)
    with output_errors(folder):
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        groups, opt_tensors = _optimizer_payload(optimizer)
        rng_plain, rng_tensors = rng_state()
        save_file(state_tensors(model), str(tmp / MODEL))
        save_file(opt_tensors, str(tmp / OPTIMIZER))
        save_file(rng_tensors, str(tmp / RNG))
        payload = {
            "format": CHECKPOINT_FORMAT,
            **state,
            "optimizer": {"class": type(optimizer).__name__, "param_groups": groups},
            "rng": rng_plain,
            "sha256": {name: file_sha256(tmp / name) for name in TENSOR_FILES},
        }
        with (tmp / STATE).open("w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        old = folder.parent / f".{folder.name}.old"
        with output_errors(folder):
            if old.exists():
                shutil.rmtree(old)
            if folder.exists():
                folder.replace(old)
            tmp.replace(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def list_checkpoints(layout: RunLayout) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every complete checkpoint of a run (``latest``, ``best``, ...)."""
    parent = layout.checkpoint().parent
    names = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    out: list[tuple[str, Path]] = []
    for name in (n for n in names if not n.startswith(".")):
        found = find_checkpoint(parent / name)
        if found is not None:
            out.append((name, found))
    return out


def has_checkpoint(layout: RunLayout) -> bool:
    """True when the run (or one of its baseline members) holds a resumable checkpoint."""
    members = layout.root / "baseline"
    folders = [layout, *(RunLayout(f) for f in sorted(members.glob("*")) if f.is_dir())]
    return any(find_checkpoint(f.checkpoint()) is not None for f in folders)


def find_checkpoint(folder: Path) -> Path | None:
    """``folder`` if it holds a complete checkpoint, or its moved-aside copy, else ``None``."""
    for candidate in (folder, folder.parent / f".{folder.name}.old"):
        if (candidate / STATE).is_file():
            return candidate
    return None


def read_state(folder: Path) -> dict[str, Any]:
    """The ``state.json`` of a checkpoint folder."""
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"checkpoint {folder} is unreadable ({exc}); start a new run") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"checkpoint {folder} has an unknown format; it was written by another pedseg version"
        )
    return state


def load_checkpoint(
    folder: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore model, optimizer and RNG states from ``folder``; return its ``state.json``."""
    state = read_state(folder)
    verify_checkpoint(folder, state, files=TENSOR_FILES if optimizer is not None else (MODEL,))
    try:
        weights = load_file(str(folder / MODEL))
        model.load_state_dict(weights, strict=True)
        if optimizer is not None:
            groups = state["optimizer"]["param_groups"]
            _restore_optimizer(optimizer, groups, load_file(str(folder / OPTIMIZER)))
            restore_rng(state["rng"], load_file(str(folder / RNG)))
    except (OSError, SafetensorError, KeyError, RuntimeError, ValueError) as exc:
        raise ModelError(f"checkpoint {folder} cannot be loaded: {exc}") from exc
    return state


def verify_checkpoint(
    folder: Path, state: dict[str, Any], *, files: tuple[str, ...] = TENSOR_FILES
) -> None:
    """Refuse a checkpoint whose tensor files do not match the SHA-256 in its ``state.json``."""
    recorded = state.get("sha256")
    if not isinstance(recorded, dict):
        raise IntegrityError(
            f"checkpoint {folder}: {STATE} records no SHA-256 of its files (written by an older "
            "pedseg, or edited); it cannot be checked, so it is not resumed from: start a new run"
        )
    for name in files:
        path = folder / name
        if not path.is_file():
            raise ModelError(f"checkpoint {folder}: {name} is missing; start a new run")
        verify_sha256(
            path,
            str(recorded.get(name)),
            recorded_in=folder / STATE,
            fix="start a new run, or restore the checkpoint",
        )


def checkpoint_weights(folder: Path) -> Path:
    """The verified weights file of a checkpoint folder (for reading snapshots)."""
    verify_checkpoint(folder, read_state(folder), files=(MODEL,))
    return folder / MODEL


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
