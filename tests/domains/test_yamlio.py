"""The strict YAML loader: size, depth and alias limits, duplicate keys; never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pedseg.domains.yamlio import (
    MAX_DEPTH,
    MAX_DESCRIPTOR_BYTES,
    load_yaml_file,
    load_yaml_text,
)
from pedseg.errors import DescriptorError

# "billion laughs": 9 levels of 9 references each expand to 9**9 strings
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)


def nested_flow(depth: int) -> str:
    """A mapping whose value is ``depth - 1`` nested lists: ``depth`` collections in all."""
    return "a: " + "[" * (depth - 1) + "]" * (depth - 1) + "\n"


def nested_block(depth: int) -> str:
    """``depth`` nested block mappings."""
    return "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


def test_plain_descriptor_text_loads() -> None:
    assert load_yaml_text("a: {b: [1, 2]}\n", source="x.yaml") == {"a": {"b": [1, 2]}}


@pytest.mark.parametrize("make", [nested_flow, nested_block], ids=["flow", "block"])
def test_depth_limit(make: object) -> None:
    assert callable(make)
    assert load_yaml_text(make(MAX_DEPTH), source="ok.yaml") is not None
    with pytest.raises(DescriptorError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load_yaml_text(make(MAX_DEPTH + 1), source="deep.yaml")


def test_thousand_deep_is_an_error_not_a_recursion_error() -> None:
    with pytest.raises(DescriptorError, match=r"deep.yaml: line 1, column \d+: nested more"):
        load_yaml_text(nested_flow(1000), source="deep.yaml")


def test_alias_bomb_refused_fast_with_a_short_message() -> None:
    start = time.perf_counter()
    with pytest.raises(DescriptorError) as info:
        load_yaml_text(ALIAS_BOMB, source="bomb.yaml")
    assert time.perf_counter() - start < 0.5
    assert str(info.value) == (
        "bomb.yaml: line 1, column 4: anchors and aliases (&name, *name) are not allowed in a "
        "descriptor; write each value out"
    )


@pytest.mark.parametrize(
    "text", ["a: &x 1\n", "a: 1\nb: *x\n", "base: &b {k: 1}\nother: {<<: *b}\n"]
)
def test_any_anchor_or_alias_refused(text: str) -> None:
    with pytest.raises(DescriptorError, match="anchors and aliases"):
        load_yaml_text(text, source="x.yaml")


def test_duplicate_key_still_refused() -> None:
    with pytest.raises(DescriptorError, match=r"line 2, column 1: duplicate key 'a'"):
        load_yaml_text("a: 1\na: 2\n", source="x.yaml")


def test_size_limit_on_text() -> None:
    filler = "# " + "x" * (MAX_DESCRIPTOR_BYTES - 8) + "\na: 1\n"
    assert len(filler.encode()) == MAX_DESCRIPTOR_BYTES
    assert load_yaml_text(filler, source="ok.yaml") == {"a": 1}
    with pytest.raises(DescriptorError, match="is 65537 bytes, more than the 64 KiB"):
        load_yaml_text(filler + "\n", source="big.yaml")


def test_huge_file_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:  # sparse: 200 MB on paper, nothing on disk
        fh.truncate(200 * 1024**2)
    start = time.perf_counter()
    with pytest.raises(DescriptorError, match=r"huge.yaml: <file>: is 209715200 bytes, more"):
        load_yaml_file(path)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"\xff\xfe\x00", "is not UTF-8 text"), (None, "does not exist")],
)
def test_file_problems(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "d.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DescriptorError, match=message):
        load_yaml_file(path)
