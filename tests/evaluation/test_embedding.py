"""Bottleneck embeddings of a tiny trained run, their t-SNE projection and figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pedseg.data.cache import build_cache
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError
from pedseg.evaluation.embedding import (
    EmbedOptions,
    collect_embeddings,
    coordinates_csv,
    list_snapshots,
    project_tsne,
    snapshot_embeddings,
    tsne_panels,
)
from pedseg.evaluation.plots import tsne_figure
from pedseg.models.segmenter import DomainSegmenter
from pedseg.runfolder.loading import load_run
from tests.conftest_runs import TINY_DOMAINS, TINY_IMAGE_SIZE, phantom_dir


@pytest.fixture
def data(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> dict[str, DomainSpec]:
    run = load_run(tiny_run)
    root = phantom_dir(tmp_path_factory)
    return {n: run.domain(n).spec.with_data_root(root / n) for n in TINY_DOMAINS}


def test_embeddings_are_the_models_own(tiny_run: Path, data: dict[str, DomainSpec]) -> None:
    run = load_run(tiny_run)
    emb = collect_embeddings(run, data)
    caches = {n: build_cache(data[n], image_size=TINY_IMAGE_SIZE) for n in TINY_DOMAINS}
    total = sum(len(c) for c in caches.values())
    width = run.card.model.base_width * 2 ** (run.card.model.depth - 1)
    assert emb.vectors.shape == (total, width)
    assert list(dict.fromkeys(emb.domains.tolist())) == list(TINY_DOMAINS)
    # Validation flags follow the run's checkpoint state.
    state = json.loads((tiny_run / "checkpoints" / "latest" / "state.json").read_text())
    for name in TINY_DOMAINS:
        mine = emb.domains == name
        val = set(emb.cases[mine & emb.validation].tolist())
        assert val == set(state["val_cases"][name]) and val
        assert set(emb.cases[mine & ~emb.validation].tolist()).isdisjoint(val)
    # Reference: the network's embed() with the domain's own batch norm, on the cached slices.
    module = run.domain("shoulder").module
    assert isinstance(module, DomainSegmenter)
    net = module.net
    head = run.card.label_mapping["shoulder"].head
    x = torch.from_numpy(np.array(caches["shoulder"].images[:5]))[:, None]
    with torch.inference_mode():
        expected = net.embed(x, head).numpy()
    got = emb.vectors[emb.domains == "shoulder"][:5]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Deterministic.
    again = collect_embeddings(run, data)
    np.testing.assert_array_equal(again.vectors, emb.vectors)


def test_max_slices_is_a_seeded_subset(tiny_run: Path, data: dict[str, DomainSpec]) -> None:
    run = load_run(tiny_run)
    full = collect_embeddings(run, data, domains=["ankle"])
    options = EmbedOptions(max_slices=7, seed=3)
    part = collect_embeddings(run, data, domains=["ankle"], options=options)
    assert part.vectors.shape[0] == 7
    assert (
        part.vectors.tolist()
        == collect_embeddings(run, data, domains=["ankle"], options=options).vectors.tolist()
    )
    keys = list(zip(full.cases.tolist(), full.slices.tolist(), strict=True))
    for case, index, vector in zip(part.cases, part.slices, part.vectors, strict=True):
        np.testing.assert_allclose(vector, full.vectors[keys.index((case, int(index)))], rtol=1e-5)
    with pytest.raises(ConfigError, match="max_slices must be >= 1"):
        EmbedOptions(max_slices=0)


def test_snapshots(tiny_run: Path, data: dict[str, DomainSpec]) -> None:
    snapshots = list_snapshots(tiny_run)
    assert [s.epoch for s in snapshots] == [1]  # latest and best hold the same (only) epoch
    (snap,) = snapshot_embeddings(tiny_run, data)
    final = collect_embeddings(load_run(tiny_run), data)
    np.testing.assert_allclose(snap.vectors, final.vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(snap.validation, final.validation)
    assert snap.title == "epoch 1 (best)"


def test_snapshots_need_checkpoints(tiny_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(tiny_run, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(ModelError, match="no checkpoint snapshot"):
        snapshot_embeddings(copy, {})


def test_tsne_is_deterministic_and_separates_clusters(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(0, 1, (20, 64)), rng.normal(8, 1, (20, 64))])
    a = project_tsne(vectors, seed=1)
    b = project_tsne(vectors, seed=1)
    assert a.shape == (40, 2)
    np.testing.assert_array_equal(a, b)
    # Two well-separated Gaussian clusters stay separated in 2D.
    ca, cb = a[:20].mean(axis=0), a[20:].mean(axis=0)
    spread = max(a[:20].std(axis=0).max(), a[20:].std(axis=0).max())
    assert np.linalg.norm(ca - cb) > 3 * spread
    assert project_tsne(vectors[:5], seed=0).shape == (5, 2)  # perplexity lowered for small n
    with pytest.raises(ConfigError, match="at least 4"):
        project_tsne(vectors[:3])


def test_tsne_png_and_points(tiny_run: Path, data: dict[str, DomainSpec], tmp_path: Path) -> None:
    emb = collect_embeddings(load_run(tiny_run), data, options=EmbedOptions(max_slices=12))
    (panel,) = tsne_panels([emb], seed=0)
    path = tsne_figure([panel], tmp_path / "tsne.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    lines = coordinates_csv(emb, panel.coords).splitlines()
    assert lines[0] == "domain,case,slice,split,x,y" and len(lines) == 25
    assert sum(",validation," in line for line in lines) == int(emb.validation.sum())
