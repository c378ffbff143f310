"""The run index: per-domain facts from the card(s) alone, equal to what loading builds on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pedseg.errors import ModelError, UnknownNameError
from pedseg.runfolder.index import RunIndex, index_run
from pedseg.runfolder.loading import load_run
from tests.conftest_runs import copy_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_index_holds_what_loading_gives_each_domain(tiny_run: Path) -> None:
    index = index_run(tiny_run)
    assert isinstance(index, RunIndex) and index.domains == ("ankle", "shoulder")
    loaded = load_run(index)
    assert loaded.index is index
    for name in index.domains:
        entry, model = index.entry(name), loaded.domain(name)
        assert (entry.spec, entry.image_size, entry.model_sha256) == (
            model.spec,
            model.image_size,
            model.model_sha256,
        )
        assert (entry.scheme, entry.arch, entry.layout) == (model.scheme, model.arch, model.layout)
        assert dict(entry.components) == dict(model.components)
        assert entry.card == index.card and entry.layout.root == tiny_run


def test_a_baseline_index_points_at_each_member(tiny_baseline_run: Path) -> None:
    index = index_run(tiny_baseline_run)
    assert index.card.kind == "baseline"
    for name in index.domains:
        entry = index.entry(name)
        member = tiny_baseline_run / "baseline" / name
        assert entry.layout.root == member and entry.card.kind == "model"
        assert entry.model_sha256 == json.loads((member / "model.json").read_text())["model_sha256"]


def test_the_index_reads_no_weights(tiny_run: Path, tmp_path: Path) -> None:
    """Missing weights are the loader's concern (the ONNX path never needs them)."""
    run = copy_run(tiny_run, tmp_path / "run")
    (run / "model.safetensors").unlink()
    assert index_run(run).entry("ankle").model_sha256
    with pytest.raises(ModelError, match="model.safetensors: missing"):
        load_run(run)


def test_unknown_domains_and_mixed_up_members_are_refused(
    tiny_run: Path, tiny_baseline_run: Path, tmp_path: Path
) -> None:
    with pytest.raises(UnknownNameError, match=r"domain of this model 'ankel'.*'ankle'"):
        index_run(tiny_run).entry("ankel")
    run = copy_run(tiny_baseline_run, tmp_path / "baseline")
    card = json.loads((run / "model.json").read_text())
    card["descriptor_hashes"]["ankle"] = "0" * 64
    (run / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="does not match the hash"):
        index_run(run)
