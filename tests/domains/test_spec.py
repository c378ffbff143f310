"""Descriptor validation: one fixture per trap, all problems of a file reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pedseg.domains.registry import load_descriptor
from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.errors import DescriptorError

GOOD = """\
schema_version: 1
name: knee
description: Pediatric knee
labels: {1: femur, 2: tibia, 3: patella}
normalization: zscore
slice_axis: auto
image_size: [128, 128]
data: {root: knee_data}
"""


def write(tmp_path: Path, text: str, name: str = "knee.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(DescriptorError) as info:
        load_descriptor(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "knee.yaml") in message
    return message


def test_good_descriptor(tmp_path: Path) -> None:
    spec = load_descriptor(write(tmp_path, GOOD))
    assert isinstance(spec, DomainSpec)
    assert spec.name == "knee"
    assert spec.labels == ((1, "femur"), (2, "tibia"), (3, "patella"))
    assert spec.num_classes == 4
    assert spec.image_size == (128, 128)
    assert spec.data is not None and spec.data.root == tmp_path / "knee_data"
    assert spec.data.images_dir == tmp_path / "knee_data" / "imagesTr"


def test_hash_ignores_data_root_but_not_labels(tmp_path: Path) -> None:
    spec = load_descriptor(write(tmp_path, GOOD))
    moved = spec.with_data_root(tmp_path / "elsewhere")
    assert moved.content_hash() == spec.content_hash()
    other = load_descriptor(write(tmp_path, GOOD.replace("patella", "fibula"), "k2.yaml"))
    assert other.content_hash() != spec.content_hash()


def test_round_trip_through_to_dict(tmp_path: Path) -> None:
    spec = load_descriptor(write(tmp_path, GOOD))
    again = parse_descriptor(spec.to_dict(), source="dict", known_normalizations={"zscore": 0})
    assert again.content_hash() == spec.content_hash()


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        (GOOD.replace("name: knee", "name: knee\nname: knee2"), "line", "duplicate key 'name'"),
        (GOOD + "colour: red\n", "colour", "unknown key"),
        (GOOD + "labls: {1: a}\n", "labls", "did you mean 'labels'"),
        (
            GOOD.replace("{1: femur, 2: tibia, 3: patella}", "{1: femur, 3: patella}"),
            "labels",
            "contiguous",
        ),
        (
            GOOD.replace("{1: femur, 2: tibia, 3: patella}", "{0: bg, 1: femur}"),
            "labels.0",
            "background",
        ),
        (
            GOOD.replace("{1: femur, 2: tibia, 3: patella}", "{1: femur, 2: femur}"),
            "labels.2",
            "duplicate label name",
        ),
        (
            GOOD.replace("{1: femur, 2: tibia, 3: patella}", "{'1': femur}"),
            "labels.1",
            "must be an integer",
        ),
        (GOOD.replace("zscore", "zscroe"), "normalization", "did you mean 'zscore'"),
        (GOOD.replace("slice_axis: auto", "slice_axis: 3"), "slice_axis", "got 3"),
        (GOOD.replace("[128, 128]", "[128]"), "image_size", "two integers"),
        (GOOD.replace("[128, 128]", "[128, 12.5]"), "image_size", "two integers"),
        (GOOD.replace("schema_version: 1", "schema_version: 2"), "schema_version", "must be 1"),
        (GOOD.replace("name: knee", "name: Knee Joint"), "name", "slug"),
        (
            GOOD.replace("{root: knee_data}", "{root: d, images: ../../etc}"),
            "data.images",
            "inside data.root",
        ),
        (
            GOOD.replace("{root: knee_data}", "{root: d, labels: /etc}"),
            "data.labels",
            "inside data.root",
        ),
        (GOOD + "postprocess: {closing_radius: -1}\n", "postprocess.closing_radius", "(0, 50]"),
        (GOOD + "postprocess: {closing: maybe}\n", "postprocess.closing", "true or false"),
        (
            GOOD + "postprocess: {chain_anchor: L5}\n",
            "postprocess.chain_anchor",
            "one of the labels",
        ),
        (GOOD + "postprocess: {chain_anchor: 5}\n", "postprocess.chain_anchor", "a label name"),
        ("- just\n- a list\n", "<root>", "must be a mapping"),
        ("name: [unclosed\n", "line", ""),
        ("!!python/object/apply:os.system ['true']\n", "line", "could not determine a constructor"),
    ],
)
def test_descriptor_traps(tmp_path: Path, text: str, field: str, fragment: str) -> None:
    message = problems_of(tmp_path, text)
    assert f": {field}" in message
    assert fragment in message


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("zscore", "nope").replace("slice_axis: auto", "slice_axis: 7") + "x: 1\n"
    message = problems_of(tmp_path, text)
    for field in ("normalization", "slice_axis", "x"):
        assert f"knee.yaml: {field}:" in message


def test_missing_required_fields(tmp_path: Path) -> None:
    message = problems_of(tmp_path, "description: nothing else\n")
    for field in ("schema_version", "name", "labels", "normalization"):
        assert f": {field}: " in message


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    assert "is empty" in problems_of(tmp_path, content)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match="does not exist"):
        load_descriptor(tmp_path / "absent.yaml")


def test_parse_descriptor_rejects_non_mapping() -> None:
    raw: Any = ["a"]
    with pytest.raises(DescriptorError, match="must be a mapping"):
        parse_descriptor(raw, source="s")


def test_augment_section_flip_axis() -> None:
    base = {"schema_version": 1, "name": "knee", "labels": {1: "a"}, "normalization": "zscore"}
    plain = parse_descriptor(base, source="k.yaml")
    assert plain.flip == "width" and "augment" not in plain.to_dict()
    tall = parse_descriptor({**base, "augment": {"flip": "height"}}, source="k.yaml")
    assert tall.flip == "height" and tall.to_dict()["augment"] == {"flip": "height"}
    assert tall.content_hash() != plain.content_hash()
    with pytest.raises(DescriptorError, match="augment.flip: must be one of width, height, none"):
        parse_descriptor({**base, "augment": {"flip": "diagonal"}}, source="k.yaml")
    with pytest.raises(DescriptorError, match="augment.mirror: unknown key"):
        parse_descriptor({**base, "augment": {"mirror": True}}, source="k.yaml")
