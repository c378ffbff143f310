"""Tiny trained runs shared by the inference and export tests (plain functions, cached per session).

Register them as pytest fixtures in a ``conftest.py`` (see ``tests/inference/conftest.py``)::

    @pytest.fixture(scope="session")
    def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tiny_run_dir(tmp_path_factory, scheme="dsl-contrastive")

Each scheme trains once per test session (a few seconds on a CPU), whatever the number of conftests
that register it. The run folders are shared: tests that modify a run copy it first
(:func:`copy_run`). Training writes ``last_run`` into a private ``PEDSEG_HOME``, never the user's.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry

__all__ = [
    "TINY_DOMAINS",
    "TINY_IMAGE_SIZE",
    "copy_run",
    "phantom_dir",
    "single_thread",
    "tiny_run_dir",
]

TINY_DOMAINS = ("ankle", "shoulder")
TINY_IMAGE_SIZE = (32, 32)
_CACHE: dict[str, Path] = {}


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread for tiny models: on a shared 2-core machine more threads only spin."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def phantom_dir(factory: pytest.TempPathFactory) -> Path:
    """Three 32x32x16 phantom cases per tiny domain (written once per session)."""
    if "phantoms" not in _CACHE:
        root = factory.mktemp("tiny_phantoms")
        synth_dataset(
            root, domains=TINY_DOMAINS, cases=3, seed=0, config=PhantomConfig(shape=(32, 32, 16))
        )
        _CACHE["phantoms"] = root
    return _CACHE["phantoms"]


def _shared_cache(factory: pytest.TempPathFactory) -> Path:
    if "cache" not in _CACHE:
        _CACHE["cache"] = factory.mktemp("tiny_cache")
    return _CACHE["cache"]


def tiny_run_dir(factory: pytest.TempPathFactory, *, scheme: str = "dsl-contrastive") -> Path:
    """A run folder of ``scheme`` trained for one epoch of two steps (trained once per session)."""
    if scheme in _CACHE:
        return _CACHE[scheme]
    from pedseg.training.config import TrainConfig
    from pedseg.training.loop import train

    phantoms = phantom_dir(factory)
    base = factory.mktemp(f"tiny_{scheme}")
    with pytest.MonkeyPatch.context() as patch, single_thread():
        patch.setenv("PEDSEG_HOME", str(base / "home"))
        patch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
        registry = DomainRegistry(home=base / "home")
        specs = registry.resolve(
            TINY_DOMAINS, data={name: phantoms / name for name in TINY_DOMAINS}
        )
        config = TrainConfig(
            domains=TINY_DOMAINS,
            scheme=scheme,  # type: ignore[arg-type]
            epochs=1,
            batch_size=4,
            image_size=TINY_IMAGE_SIZE,
            base_width=4,
            depth=3,
            steps_per_epoch=2,
            device="cpu",
            seed=0,
        )
        train(config, specs, out=base / "run", cache_root=_shared_cache(factory))
    _CACHE[scheme] = base / "run"
    return _CACHE[scheme]


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a shared run folder (for tests that modify or export into it)."""
    shutil.copytree(run, dest)
    return dest
