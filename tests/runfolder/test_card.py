"""The model card: a typed round trip, the previous format, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pedseg.data.label_chain import LabelChain
from pedseg.errors import ModelError
from pedseg.inference.predictor import open_predictor
from pedseg.runfolder import RunLayout
from pedseg.runfolder.card import CARD_FORMAT, ModelCard, read_card, write_card
from pedseg.runfolder.loading import load_run
from tests.conftest_runs import copy_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(run: Path) -> dict[str, object]:
    return json.loads(RunLayout(run).card.read_text())


def test_card_round_trip(tiny_run: Path, tiny_baseline_run: Path, tmp_path: Path) -> None:
    for source in (tiny_run, tiny_baseline_run):
        card = read_card(source)
        again = tmp_path / f"{source.parent.name}-{source.name}"
        again.mkdir()
        write_card(again, card)
        as_json = json.loads(json.dumps(card.to_json()))
        assert json.loads(json.dumps(read_card(again).to_json())) == as_json
        assert _raw(again) == as_json and as_json["format"] == CARD_FORMAT
    card = read_card(tiny_run)
    assert card.kind == "model" and card.domains == ("ankle", "shoulder")
    assert card.spec("ankle").content_hash() == card.descriptor_hashes["ankle"]
    assert set(card.artifacts) == {"domains.safetensors"}  # the profiles' hash is recorded


def test_a_format_1_card_is_read_and_its_run_loads(tiny_run: Path, tmp_path: Path) -> None:
    """What pedseg 0.1 wrote: format 1, no artifact hashes."""
    run = copy_run(tiny_run, tmp_path / "run")
    raw = _raw(run)
    raw["format"] = 1
    del raw["artifacts"]
    RunLayout(run).card.write_text(json.dumps(raw))
    card = read_card(run)
    assert card.artifacts == {} and card.model_sha256 == raw["model_sha256"]
    loaded = load_run(run)
    assert loaded.domains == ("ankle", "shoulder")
    from pedseg.runfolder.profiles import load_profiles

    assert set(load_profiles(loaded.index)) == {"ankle", "shoulder"}  # read unchecked


def test_a_format_2_card_holds_the_best_epochs_weights(tiny_run: Path, tmp_path: Path) -> None:
    """Before ``keep``, a run folder always held the best epoch's weights."""
    run = copy_run(tiny_run, tmp_path / "run")
    raw = _raw(run)
    raw["format"], raw["best_epoch"], raw["best_metric"] = 2, 7, 0.5
    del raw["weights_epoch"], raw["weights_metric"]
    RunLayout(run).card.write_text(json.dumps(raw))
    card = read_card(run)
    assert (card.weights_epoch, card.weights_metric) == (7, 0.5)
    again = tmp_path / "again"
    again.mkdir()
    write_card(again, card)
    assert _raw(again)["format"] == CARD_FORMAT and _raw(again)["weights_epoch"] == 7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 4, "pedseg_version": "9.0"}, "written by pedseg 9.0, newer .* upgrade pedseg"),
        ({"format": 0}, "unknown model format 0"),
        ({"color": "blue"}, "unknown field 'color'"),
        ({"kind": "tree"}, "unknown kind 'tree'"),
        ({"best_metric": "high"}, "best_metric must be a finite number"),
        ({"weights_metric": float("nan")}, "weights_metric must be a finite number"),
        ({"weights_epoch": -1}, "weights_epoch must be a non-negative integer"),
        ({"model_sha256": "abc"}, "model_sha256 must be a hex SHA-256"),
        ({"image_size": [256]}, r"image_size must be \[H, W\]"),
    ],
)
def test_invalid_cards_are_one_line_errors(
    tiny_run: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    raw = {**_raw(run), **change}
    RunLayout(run).card.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=message) as info:
        read_card(run)
    assert "\n" not in str(info.value) and str(RunLayout(run).card) in str(info.value)


def test_label_mapping_must_match_descriptor_and_heads(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    raw = _raw(run)
    raw["label_mapping"]["ankle"]["head"] = 7  # type: ignore[index]
    RunLayout(run).card.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"label_mapping.ankle: head 7 is not in \[0, 2\)"):
        read_card(run)


def test_a_card_of_kind_model_needs_its_network(tmp_path: Path) -> None:
    card = ModelCard(kind="model", scheme="dsl", domains=("a",), training={})
    with pytest.raises(ModelError, match="needs its model config"):
        write_card(tmp_path, card)


def test_training_records_the_post_processing_of_its_labels(tiny_run: Path, tmp_path: Path) -> None:
    card = read_card(tiny_run)
    for domain in card.domains:
        rules = card.postprocess[domain]
        assert set(rules) == set(card.spec(domain).label_names)
        assert all(keep >= 0 and volume >= 0 for keep, volume in rules.values())
    loaded = load_run(tiny_run)
    assert loaded.domain("ankle").components == card.postprocess["ankle"]
    raw = _raw(tiny_run)
    raw["postprocess"]["ankle"]["talus"]["keep_largest"] = -1  # type: ignore[index]
    bad = copy_run(tiny_run, tmp_path / "bad")
    RunLayout(bad).card.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="keep_largest must be an integer >= 0"):
        read_card(bad)


def test_a_label_chain_is_recorded_loaded_and_refused_when_wrong(
    tiny_run: Path, tmp_path: Path
) -> None:
    assert read_card(tiny_run).label_chains == {}  # no series among the phantom bones
    run = copy_run(tiny_run, tmp_path / "run")
    chain = LabelChain(("tibia", "talus", "calcaneus"), 2, 9.0, 6.0, 400.0, 100.0, "test")
    raw = _raw(run)
    raw["label_chains"] = {"ankle": chain.to_dict()}
    RunLayout(run).card.write_text(json.dumps(raw))
    card = read_card(run)
    assert card.label_chains == {"ankle": chain}
    assert card.to_json()["label_chains"] == {"ankle": chain.to_dict()}
    loaded = load_run(run)
    assert loaded.domain("ankle").label_chain == chain
    assert loaded.domain("shoulder").label_chain is None
    predictor = open_predictor(run, domain="ankle", backend="torch", device="cpu")
    rule = predictor.info.chain_rule()
    assert rule is not None and rule.ids == (3, 2, 1) and rule.axis == 2
    for change, message in [
        ({"shoulder": {**chain.to_dict()}}, "'tibia' is not a label of the domain"),
        ({"knee": chain.to_dict()}, "label_chains.knee: not a domain of this model"),
        ({"ankle": {**chain.to_dict(), "gap_mm": -1}}, "gap_mm"),
    ]:
        RunLayout(run).card.write_text(json.dumps({**raw, "label_chains": change}))
        with pytest.raises(ModelError, match=message) as info:
            read_card(run)
        assert "\n" not in str(info.value) and str(RunLayout(run).card) in str(info.value)
