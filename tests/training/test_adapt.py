"""BN adaptation to a new site: only that domain's running statistics change, and they are right."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pedseg.errors import ConfigError, DatasetError, OutputExistsError, UnknownNameError
from pedseg.io import read_volume, write_volume
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.models.unet import ConvBlock
from pedseg.runfolder.integrity import file_sha256
from pedseg.runfolder.loading import load_run
from pedseg.runfolder.pointer import last_run
from pedseg.training.adapt import adapt_bn, collect_scans, reestimate_bn
from tests.conftest_runs import copy_run, phantom_dir, single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def new_site(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The ankle phantoms as another scanner would see them: gamma, bias field, scaling."""
    folder = tmp_path_factory.mktemp("new_site")
    scans: list[Path] = []
    for source in sorted((phantom_dir(tmp_path_factory) / "ankle" / "imagesTr").iterdir()):
        volume = read_volume(source)
        array = volume.array.astype(np.float64)
        x = np.linspace(-1.0, 1.0, array.shape[0])[:, None, None]
        shifted = 400.0 * (array / array.max()) ** 0.6 * np.exp(0.4 * x)
        path = folder / f"site_{source.name}"
        write_volume(shifted.astype(np.float32), volume.affine, path)
        scans.append(path)
    return scans


def test_adapt_changes_only_that_domains_running_statistics(
    tiny_run: Path, new_site: list[Path], tmp_path: Path
) -> None:
    base = copy_run(tiny_run, tmp_path / "base")
    report = adapt_bn(base, "ankle", new_site, batch_size=8, device="cpu")
    out = tmp_path / "base-adapted-ankle"
    assert report.run_dir == out and last_run() == out.resolve()
    assert (report.n_scans, report.n_slices) == (3, 48)

    old = load_file(str(base / "model.safetensors"))
    new = load_file(str(out / "model.safetensors"))
    assert set(old) == set(new)
    changed = sorted(key for key in old if not torch.equal(old[key], new[key]))
    stats = ("running_mean", "running_var", "num_batches_tracked")
    assert changed and all(".bns.0." in key and key.endswith(stats) for key in changed)
    means = [key for key in old if ".bns.0.running_mean" in key]
    assert means and all(key in changed for key in means)
    assert all(key.replace("mean", "var") in changed for key in means)

    card = json.loads((out / "model.json").read_text())
    base_card = json.loads((base / "model.json").read_text())
    assert card["adapted"] == {
        "domain": "ankle",
        "n_scans": 3,
        "n_slices": 48,
        "from_model_sha256": base_card["model_sha256"],
    }
    assert card["model_sha256"] == file_sha256(out / "model.safetensors") == report.model_sha256
    changed = ("adapted", "model_sha256", "artifacts")  # the profiles were re-made too
    assert {k: v for k, v in card.items() if k not in changed} == {
        k: v for k, v in base_card.items() if k not in changed
    }
    assert set(card["artifacts"]) == {"domains.safetensors"}
    text = (out / "model.json").read_text()
    assert "site_" not in text and str(tmp_path) not in text  # no file names or paths
    names = ["domains.json", "domains.safetensors", "model.json", "model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == names  # domains.*: recognition profiles

    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    before, after = load_run(base), load_run(out)
    with torch.no_grad():
        assert torch.equal(before.domain("shoulder").module(x), after.domain("shoulder").module(x))
        assert not torch.equal(before.domain("ankle").module(x), after.domain("ankle").module(x))


def test_reestimated_statistics_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    net = build_model(ModelConfig(base_width=4, depth=2), num_classes=[3, 3]).eval()
    slices = (torch.rand(8, 16, 16) * 3.0 + 1.0).numpy()
    block = cast(ConvBlock, net.encoders[0])
    norm = cast(DomainBatchNorm2d, block.norm1)
    with torch.no_grad():
        features = block.conv1(torch.from_numpy(slices)[:, None]).double()
    bn = cast(nn.BatchNorm2d, norm.bns[1])
    other = {k: v.clone() for k, v in norm.bns[0].state_dict().items()}

    assert reestimate_bn(net, 1, slices, batch_size=8) == 1  # one batch: exact mean and variance
    torch.testing.assert_close(
        bn.state_dict()["running_mean"].double(), features.mean(dim=(0, 2, 3))
    )
    var = features.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.state_dict()["running_var"].double(), var, rtol=1e-4, atol=1e-6)
    assert reestimate_bn(net, 1, slices, batch_size=4) == 2  # equal halves: mean of the means
    torch.testing.assert_close(
        bn.state_dict()["running_mean"].double(), features.mean(dim=(0, 2, 3))
    )
    assert (
        int(bn.state_dict()["num_batches_tracked"]) == 2 and bn.momentum == 0.1 and not net.training
    )
    for key, value in norm.bns[0].state_dict().items():
        assert torch.equal(value, other[key]), key


def test_adapt_refuses_what_it_cannot_do(
    tiny_run: Path, new_site: list[Path], tmp_path: Path
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    with pytest.raises(OutputExistsError, match="taken"):
        adapt_bn(tiny_run, "ankle", new_site, out=taken, device="cpu")
    with pytest.raises(UnknownNameError, match="domain of this model 'knee'"):
        adapt_bn(tiny_run, "knee", new_site, out=tmp_path / "a", device="cpu")
    with pytest.raises(ConfigError, match="batch_size"):
        adapt_bn(tiny_run, "ankle", new_site, out=tmp_path / "b", batch_size=1, device="cpu")
    joint = copy_run(tiny_run, tmp_path / "joint")
    card = json.loads((joint / "model.json").read_text())
    card.update(scheme="joint", model={**card["model"], "norm": "bn"})
    (joint / "model.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="joint"):
        adapt_bn(joint, "ankle", new_site, out=tmp_path / "c", device="cpu")
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))


def test_collect_scans_expands_folders(tmp_path: Path, new_site: list[Path]) -> None:
    assert collect_scans([new_site[0].parent]) == sorted(new_site)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no volume files"):
        collect_scans([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="at least one"):
        collect_scans([])
